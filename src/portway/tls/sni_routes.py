"""The SNI routing table of a TLS passthrough listener, compiled once per config.

A passthrough listener routes a connection by the server name of its ClientHello alone: there is
no path, header or method to look at before the stream is relayed. Selection, in order:

1. the exact name (``api.example.com``), one dict lookup;
2. the one-label wildcard: ``*.example.com`` is keyed by ``example.com`` and looked up with the
   name minus its first label, so it matches ``a.example.com`` but neither ``a.b.example.com`` nor
   ``example.com`` (Kubernetes' wildcard rule, the one HTTP routes and certificates follow too);
3. ``default_service``, which also takes connections without SNI;
4. nothing: the caller closes the connection (without terminating TLS it cannot send an alert).

Like ``routing.RouteTable`` the table is generic over its target: the data plane stores ``Service``
objects and this module imports neither it nor the proxy. A host listed by two routes keeps the
first (in declared order) and a route naming an unknown service is skipped; both are reported in
``diagnostics`` rather than raised, as ``compile_routes`` does, since a validated config has neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from portway.config.tls import PassthroughConfig

T = TypeVar("T")
V = TypeVar("V")

DEFAULT_RULE = "default"  # the rule label of a connection sent to default_service


def lookup_name(name: str, exact: Mapping[str, V], wildcard: Mapping[str, V]) -> V | None:
    """``exact[name]``, else the one-label wildcard's entry (``a.example.com`` -> the entry of
    ``*.example.com``, stored under ``example.com``), else None."""
    found = exact.get(name)
    if found is not None:
        return found
    _, dot, parent = name.partition(".")
    return wildcard.get(parent) if dot else None


@dataclass(frozen=True, slots=True)
class SniMatch(Generic[T]):
    target: T
    service: str  # the service's name, for logs and statistics
    rule: str  # the host pattern that matched ("a.example.com", "*.example.com") or "default"


@dataclass(frozen=True, slots=True)
class SniRoutes(Generic[T]):
    exact: dict[str, SniMatch[T]]
    wildcard: dict[str, SniMatch[T]]  # keyed by the domain after "*."
    default: SniMatch[T] | None
    diagnostics: list[str] = field(default_factory=list)

    def match(self, server_name: str | None) -> SniMatch[T] | None:
        """The route for ``server_name`` (lower-case, no trailing dot, as ``ClientHelloParser``
        returns it; None without SNI), or None when no route and no default take it."""
        if server_name is not None:
            found = lookup_name(server_name, self.exact, self.wildcard)
            if found is not None:
                return found
        return self.default

    def select(self, server_name: str | None) -> T | None:
        found = self.match(server_name)
        return found.target if found is not None else None

    def __len__(self) -> int:
        return len(self.exact) + len(self.wildcard) + (self.default is not None)


def compile_sni_routes(config: PassthroughConfig, targets: Mapping[str, T]) -> SniRoutes[T]:
    """The table of ``config``'s routes; ``targets`` maps service names to what is stored."""
    diagnostics: list[str] = []
    exact: dict[str, SniMatch[T]] = {}
    wildcard: dict[str, SniMatch[T]] = {}
    for index, route in enumerate(config.routes):
        if route.service not in targets:
            diagnostics.append(
                f"passthrough route {index} skipped: service {route.service!r} is not defined"
            )
            continue
        for host in route.hosts:
            pattern = host.lower().rstrip(".")
            table, key = (wildcard, pattern[2:]) if pattern.startswith("*.") else (exact, pattern)
            kept = table.get(key)
            if kept is not None:
                if kept.service != route.service:
                    diagnostics.append(
                        f"passthrough route {index}: host {pattern!r} already goes to service "
                        f"{kept.service!r} (an earlier route); this one never does"
                    )
                continue
            table[key] = SniMatch(targets[route.service], route.service, pattern)
    default: SniMatch[T] | None = None
    if config.default_service is not None:
        if config.default_service not in targets:
            diagnostics.append(
                f"passthrough default_service {config.default_service!r} is not defined: "
                "connections no route takes are closed"
            )
        else:
            default = SniMatch(
                targets[config.default_service], config.default_service, DEFAULT_RULE
            )
    return SniRoutes(exact=exact, wildcard=wildcard, default=default, diagnostics=diagnostics)
