"""Compiling route configs into a ``RouteTable`` (selection itself lives in ``routing.table``).

Compilation resolves each route's service to its target once, normalizes rule paths the way
request paths are normalized, compiles regexes once (shared between tables), and orders every group
of routes sharing a (host, path, path type) key: most matchers first, then declared order.

Routes that cannot be used are skipped and recorded in ``RouteTable.diagnostics``: an unknown
service, or a path that does not normalize. A route that can never win (same key as an earlier route
without matchers) is kept but also reported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Generic, TypeVar

from portway.config.model import RouteConfig
from portway.routing.matchers import build_matchers
from portway.routing.normalize import normalize_path
from portway.routing.rewrite import Redirect, Rewrite, RouteAction
from portway.routing.table import (
    ANY_HOST_LABEL,
    CompiledRoute,
    HostTable,
    RouteGroup,
    RouteTable,
    prefix_key,
)

T = TypeVar("T")


def compile_routes(
    routes: Sequence[RouteConfig], targets: Mapping[str, T], *, merge_slashes: bool = False
) -> RouteTable[T]:
    """Build the table that ``RouteTable.select`` walks; ``targets`` maps service name to target."""
    diagnostics: list[str] = []
    compiled: list[CompiledRoute[T]] = []
    patterns: dict[str, re.Pattern[str]] = {}  # one compiled regex per distinct source
    for index, config in enumerate(routes):
        route = _compile_route(index, config, targets, merge_slashes, patterns, diagnostics)
        if route is not None:
            compiled.append(route)

    exact_hosts: dict[str, _HostTableBuilder[T]] = {}
    wildcard_hosts: dict[str, _HostTableBuilder[T]] = {}
    any_host = _HostTableBuilder[T](ANY_HOST_LABEL)
    for route in compiled:
        if not route.hosts:
            any_host.add(route)
        for host in route.hosts:
            if host.startswith("*."):
                domain = host[2:]
                builder = wildcard_hosts.setdefault(domain, _HostTableBuilder(host))
            else:
                builder = exact_hosts.setdefault(host, _HostTableBuilder(host))
            builder.add(route)

    return RouteTable(
        exact_hosts={h: b.build(diagnostics) for h, b in exact_hosts.items()},
        wildcard_hosts={d: b.build(diagnostics) for d, b in wildcard_hosts.items()},
        any_host=any_host.build(diagnostics) if any_host.routes else None,
        routes=tuple(compiled),
        diagnostics=diagnostics,
    )


def _compile_route(
    index: int,
    config: RouteConfig,
    targets: Mapping[str, T],
    merge_slashes: bool,
    patterns: dict[str, re.Pattern[str]],
    diagnostics: list[str],
) -> CompiledRoute[T] | None:
    name = config.name or f"route-{index}"
    if config.service is not None and config.service not in targets:
        diagnostics.append(
            f"route {name} (routes[{index}]) skipped: service {config.service!r} is not defined"
        )
        return None
    path = config.path
    pattern = None
    if config.path_type == "regex":
        pattern = patterns.get(path)
        if pattern is None:
            pattern = patterns[path] = re.compile(path)
    else:
        try:
            path = normalize_path(path, merge_slashes)
        except ValueError as exc:
            diagnostics.append(f"route {name} (routes[{index}]) skipped: path {path!r}: {exc}")
            return None
    try:
        action = _compile_action(config, prefix_key(path), merge_slashes)
    except ValueError as exc:
        diagnostics.append(f"route {name} (routes[{index}]) skipped: rewrite: {exc}")
        return None
    return CompiledRoute(
        name=name,
        index=index,
        hosts=tuple(dict.fromkeys(config.hosts)),  # a host listed twice is one table entry
        path=path,
        path_type=config.path_type,
        matchers=build_matchers(config),
        target=targets[config.service] if config.service is not None else None,
        pattern=pattern,
        action=action,
    )


def _compile_action(config: RouteConfig, key: str, merge_slashes: bool) -> RouteAction | None:
    """The route's rewrite or redirect, built once here so that requests compile nothing."""
    if config.redirect is not None:
        return Redirect(config.redirect, key)
    if config.rewrite is not None:
        return Rewrite(config.rewrite, key, merge_slashes)
    return None


class _HostTableBuilder(Generic[T]):
    def __init__(self, label: str) -> None:
        self.label = label
        self.routes: list[CompiledRoute[T]] = []
        self.exact: dict[str, list[CompiledRoute[T]]] = {}
        self.regex: dict[str, list[CompiledRoute[T]]] = {}  # insertion order is declared order
        self.prefix: dict[str, list[CompiledRoute[T]]] = {}

    def add(self, route: CompiledRoute[T]) -> None:
        self.routes.append(route)
        if route.path_type == "exact":
            self.exact.setdefault(route.path, []).append(route)
        elif route.path_type == "regex":
            self.regex.setdefault(route.path, []).append(route)
        else:
            self.prefix.setdefault(prefix_key(route.path), []).append(route)

    def build(self, diagnostics: list[str]) -> HostTable[T]:
        regex: list[tuple[re.Pattern[str], RouteGroup[T]]] = []
        for routes in self.regex.values():
            pattern = routes[0].pattern
            assert pattern is not None  # every regex route carries its compiled path
            regex.append((pattern, _tried_order(routes)))
        built = HostTable(
            label=self.label,
            exact={path: _tried_order(routes) for path, routes in self.exact.items()},
            regex=tuple(regex),
            prefix={key: _tried_order(routes) for key, routes in self.prefix.items()},
            prefix_lengths=frozenset(len(key) for key in self.prefix),
            routes=tuple(self.routes),
        )
        groups = [*built.exact.values(), *(g for _, g in built.regex), *built.prefix.values()]
        for group in groups:
            _report_shadowed(group, built.title, diagnostics)
        return built


def _tried_order(routes: list[CompiledRoute[T]]) -> RouteGroup[T]:
    return tuple(sorted(routes, key=lambda r: (-len(r.matchers), r.index)))


def _report_shadowed(group: RouteGroup[T], title: str, diagnostics: list[str]) -> None:
    """Routes after one without matchers in a group can never be reached."""
    for position, route in enumerate(group[:-1]):
        if not route.matchers:
            for hidden in group[position + 1 :]:
                diagnostics.append(
                    f"route {hidden.name} can never be selected in {title}: "
                    f"route {route.name} has the same {route.describe_path()} and no matchers"
                )
            return
