"""The compiled route table and how it selects a route for a request.

Selection, in order (``router.compile_routes`` builds the structures this walks):

1. Host. ``request.host`` is lower-case without port. The table for that exact host is searched
   first; if it has no route whose path and matchers pass, the wildcard table ``*.<rest>`` is
   searched, where ``<rest>`` is the host minus its first label, so a wildcard covers exactly one
   label (Kubernetes Ingress: ``*.foo.com`` matches ``bar.foo.com``, not ``baz.bar.foo.com`` nor
   ``foo.com``). Last come the routes without hosts, which apply to every host. A route listing
   several hosts sits in each of their tables.
2. Path, within one host table: Exact paths (one dict lookup), then Regex routes in declared order
   (``fullmatch`` on the normalized path), then Prefix routes, longest prefix first. Prefix
   matching is element-wise on ``/``-separated segments (Kubernetes Ingress "Prefix"): ``/foo``
   matches ``/foo``, ``/foo/`` and ``/foo/bar`` but not ``/foobar``; a trailing ``/`` on the rule
   is ignored; ``/`` matches every path. Prefixes are dict keys (the rule path without its trailing
   ``/``) and the request path's own prefixes are looked up longest first: O(path depth), whatever
   the rule count.
3. Matchers. Routes sharing a (host, path, path type) key are tried with the most matchers first,
   then in declared order. When none passes, the search goes on to the next candidate (the next
   regex, a shorter prefix, then the next host table).

Tracing: given a list, ``select`` appends a ``TraceStep`` for every route it tried, then one for
each route of a searched host table it did not reach, and a step naming each host table that had
no match. Tracing only adds appends behind ``if tracer is not None``, so explain follows the very
code that routes; without a trace, selection allocates nothing but the prefix slices it looks up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Generic, Literal, TypeAlias, TypeVar

from portway.config.model import PathType
from portway.messages import Request
from portway.routing.matchers import Matcher
from portway.routing.rewrite import RouteAction

T = TypeVar("T")

Outcome = Literal["matched", "lost"]

ANY_HOST_LABEL = "*"  # the label of the table of routes without hosts


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One decision of a selection. ``route`` is None for a step about a whole host table."""

    route: str | None
    outcome: Outcome
    reason: str


class CompiledRoute(Generic[T]):
    """One route as the table selects it, read-only (built by ``router.compile_routes``).

    A plain class with slots, not a frozen dataclass: mypyc compiles no generic dataclass, and a
    Python class here cost each request four attribute reads through the object protocol
    (``action``, ``name``, ``index``, ``target``: ~170 instructions each, callgrind)."""

    __slots__ = (
        "action",
        "hosts",
        "index",
        "matchers",
        "name",
        "path",
        "path_type",
        "pattern",
        "target",
    )

    def __init__(
        self,
        *,
        name: str,
        index: int,
        hosts: tuple[str, ...],
        path: str,
        path_type: PathType,
        matchers: tuple[Matcher, ...],
        target: T | None,
        pattern: re.Pattern[str] | None = None,
        action: RouteAction | None = None,
    ) -> None:
        # Final: mypy refuses any later write, and compiled the attributes are not writable.
        self.name: Final = name  # the config name, or "route-<index>"
        self.index: Final = index  # position in the config's route list
        self.hosts: Final = hosts  # empty: any host
        self.path: Final = path  # normalized for exact and prefix; the pattern for regex
        self.path_type: Final = path_type
        self.matchers: Final = matchers
        self.target: Final = target  # None: a redirect route, which answers itself
        self.pattern: Final = pattern  # the compiled path of a regex route
        self.action: Final = action  # the rewrite or redirect of the few routes with one

    def __repr__(self) -> str:
        return f"CompiledRoute({self.name!r}, {self.describe_path()!r})"

    def path_matches(self, path: str) -> bool:
        """This route's path rule alone, route by route: for explaining, never for routing."""
        if self.pattern is not None:
            return self.pattern.fullmatch(path) is not None
        if self.path_type == "exact":
            return path == self.path
        key = prefix_key(self.path)
        return path == key or path.startswith(key + "/")

    def accepts(self, request: Request) -> bool:
        for matcher in self.matchers:  # noqa: SIM110 - all() would build a generator per request
            if not matcher.matches(request):
                return False
        return True

    def rejection(self, request: Request) -> str | None:
        """Why the first failing matcher refuses ``request``; None if all pass."""
        for matcher in self.matchers:
            if not matcher.matches(request):
                return matcher.failure(request)
        return None

    def describe_path(self) -> str:
        return f"{self.path_type} {self.path}"

    def describe_matchers(self) -> str:
        return ", ".join(m.describe() for m in self.matchers)


def prefix_key(path: str) -> str:
    """The dict key of a normalized Prefix rule path: its trailing "/" is ignored, so "/" is ""."""
    return path[:-1] if path.endswith("/") else path


# Routes on one key, in the order they are tried. A string: compiled by mypyc, CompiledRoute is a
# plain class at run time, which cannot be subscripted.
RouteGroup: TypeAlias = "tuple[CompiledRoute[T], ...]"


class HostTable(Generic[T]):
    """The routes of one host (or wildcard, or of any host), indexed for selection."""

    __slots__ = ("exact", "label", "prefix", "prefix_lengths", "regex", "routes")

    def __init__(
        self,
        label: str,  # "api.example.com", "*.example.com", or "*" for the routes without hosts
        exact: dict[str, RouteGroup[T]],
        regex: tuple[tuple[re.Pattern[str], RouteGroup[T]], ...],
        prefix: dict[str, RouteGroup[T]],  # keyed by rule path without trailing "/"; "/" is ""
        prefix_lengths: frozenset[
            int
        ],  # lengths of the prefix keys: skip slicing where none can hit
        routes: RouteGroup[T],  # every route of this table, in declared order
    ) -> None:
        self.label = label
        self.exact = exact
        self.regex = regex
        self.prefix = prefix
        self.prefix_lengths = prefix_lengths
        self.routes = routes

    @property
    def title(self) -> str:
        if self.label == ANY_HOST_LABEL:
            return "host table for any host"
        return f"host table {self.label}"

    def match(self, request: Request, tracer: _Tracer | None) -> CompiledRoute[T] | None:
        if tracer is None:
            return self._search(request, None)
        tracer.considered.clear()
        winner = self._search(request, tracer)
        tracer.unreached(self.routes, request.path, winner)
        if winner is None:
            tracer.note(f"{self.title} had no match")
        return winner

    def _search(self, request: Request, tracer: _Tracer | None) -> CompiledRoute[T] | None:
        path = request.path
        if self.exact:
            group = self.exact.get(path)
            if group is not None:
                found = _first_accepting(group, request, tracer)
                if found is not None:
                    return found
        for pattern, group in self.regex:
            if pattern.fullmatch(path) is None:
                if tracer is not None:
                    for route in group:
                        tracer.lost(route, f"path {path} does not match regex {route.path}")
                continue
            found = _first_accepting(group, request, tracer)
            if found is not None:
                return found
        prefix = self.prefix
        if not prefix:
            return None
        lengths = self.prefix_lengths
        if len(path) in lengths:
            group = prefix.get(path)
            if group is not None:
                found = _first_accepting(group, request, tracer)
                if found is not None:
                    return found
        # Each "/" ends a shorter element-wise prefix; the one at 0 gives "", the key of "/".
        end = path.rfind("/")
        while end >= 0:
            if end in lengths:
                group = prefix.get(path[:end])
                if group is not None:
                    found = _first_accepting(group, request, tracer)
                    if found is not None:
                        return found
            end = path.rfind("/", 0, end)
        return None


def _first_accepting(
    group: RouteGroup[T], request: Request, tracer: _Tracer | None
) -> CompiledRoute[T] | None:
    for route in group:
        # Most routes have no matchers: no method call for them (CompiledRoute is a Python class).
        if not route.matchers or route.accepts(request):
            if tracer is not None:
                tracer.matched(route, request)
            return route
        if tracer is not None:
            tracer.rejected(route, request)
    return None


@dataclass(slots=True)
class _Tracer:
    """Writes trace steps; exists only while explaining, so the routing path never formats text."""

    steps: list[TraceStep]
    considered: set[int] = field(default_factory=set)  # route indexes tried in the current table

    def matched(self, route: CompiledRoute[T], request: Request) -> None:
        reason = f"path {request.path} matches {route.describe_path()}"
        if route.matchers:
            reason += f" and {route.describe_matchers()}"
        self.considered.add(route.index)
        self.steps.append(TraceStep(route.name, "matched", reason))

    def rejected(self, route: CompiledRoute[T], request: Request) -> None:
        why = route.rejection(request)
        self.lost(route, f"path matches {route.describe_path()} but {why}")

    def lost(self, route: CompiledRoute[T], reason: str) -> None:
        self.considered.add(route.index)
        self.steps.append(TraceStep(route.name, "lost", reason))

    def note(self, reason: str) -> None:
        self.steps.append(TraceStep(None, "lost", reason))

    def unreached(self, routes: RouteGroup[T], path: str, winner: CompiledRoute[T] | None) -> None:
        for route in routes:
            if route.index in self.considered:
                continue
            if route.path_matches(path):
                winner_name = winner.name if winner is not None else "nothing"
                self.lost(route, f"not tried: {winner_name} was selected first")
            elif route.path_type == "exact":
                self.lost(route, f"path {path} is not exact {route.path}")
            else:
                self.lost(route, f"path {path} does not match {route.describe_path()}")


class RouteTable(Generic[T]):
    """Every host table of a config, and what compiling it reported."""

    __slots__ = ("any_host", "diagnostics", "exact_hosts", "routes", "wildcard_hosts")

    def __init__(
        self,
        exact_hosts: dict[str, HostTable[T]],
        wildcard_hosts: dict[str, HostTable[T]],  # keyed by the domain after "*."
        any_host: HostTable[T] | None,
        routes: tuple[CompiledRoute[T], ...],  # every compiled route, in declared order
        diagnostics: list[str],  # routes skipped or unreachable, and why
    ) -> None:
        self.exact_hosts = exact_hosts
        self.wildcard_hosts = wildcard_hosts
        self.any_host = any_host
        self.routes = routes
        self.diagnostics = diagnostics

    def select(
        self, request: Request, trace: list[TraceStep] | None = None
    ) -> CompiledRoute[T] | None:
        """The route for ``request``, or None (404). See the module docstring for the order."""
        tracer = _Tracer(trace) if trace is not None else None
        host = request.host
        table = self.exact_hosts.get(host) if self.exact_hosts else None
        if table is not None:
            found = table.match(request, tracer)
            if found is not None:
                return found
        elif tracer is not None and self.exact_hosts:
            tracer.note(f"no host table for {host}")
        if self.wildcard_hosts:
            dot = host.find(".")
            table = self.wildcard_hosts.get(host[dot + 1 :]) if dot > 0 else None
            if table is not None:
                found = table.match(request, tracer)
                if found is not None:
                    return found
            elif tracer is not None:
                tracer.note(f"no wildcard host table covers {host}")
        if self.any_host is not None:
            return self.any_host.match(request, tracer)
        return None

    def host_tables(self) -> list[HostTable[T]]:
        """Every host table in the order hosts are tried: exact, wildcard, then any host."""
        tables = [*self.exact_hosts.values(), *self.wildcard_hosts.values()]
        if self.any_host is not None:
            tables.append(self.any_host)
        return tables
