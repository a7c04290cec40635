"""Routing decisions and route tables as text a person reads (``x-portway-explain``, the CLI).

``explain`` runs the real selection with a trace, so what it reports is what routing does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from portway.messages import Request
from portway.routing.rewrite import Redirect, Rewrite
from portway.routing.table import (
    CompiledRoute,
    HostTable,
    RouteTable,
    TraceStep,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Explanation(Generic[T]):
    request: str  # "GET host/path?query"
    route: CompiledRoute[T] | None  # None: no route, the proxy answers 404
    steps: tuple[TraceStep, ...]
    request_object: Request | None = None  # for what a rewrite or redirect makes of it


def explain(table: RouteTable[T], request: Request) -> Explanation[T]:
    steps: list[TraceStep] = []
    route = table.select(request, steps)
    query = f"?{request.query}" if request.query else ""
    line = f"{request.method} {request.host}{request.path}{query}"
    return Explanation(line, route, tuple(steps), request)


def target_name(target: object) -> str:
    if target is None:
        return "(answers itself)"  # a redirect route has no service
    return str(getattr(target, "name", str(target)))


def _action_lines(route: CompiledRoute[Any], request: Request | None) -> list[str]:
    """What a route's rewrite or redirect makes of this request."""
    action = route.action
    if request is None:
        return [f"  {action.describe()}"] if action is not None else []
    if isinstance(action, Redirect):
        location = action.location(request.host, request.path, request.query)
        return [f"  {action.describe()}", f"  answers {action.status}, location: {location}"]
    if isinstance(action, Rewrite):
        try:
            sent = action.target(request.path, request.query).decode("ascii")
        except ValueError as exc:
            sent = f"(invalid, answers 500: {exc})"
        return [f"  {action.describe()}", f"  sent upstream as: {sent}"]
    return []


def render_explanation(explanation: Explanation[Any]) -> str:
    lines = [f"request: {explanation.request}"]
    route = explanation.route
    if route is None:
        lines.append("result: no route matched (404)")
    else:
        lines.append(
            f"result: route {route.name} -> {target_name(route.target)} ({route.describe_path()})"
        )
        for step in explanation.steps:
            if step.outcome == "matched":
                lines.append(f"  because {step.reason}")
        lines.extend(_action_lines(route, explanation.request_object))
    tried = [step for step in explanation.steps if step.outcome == "lost"]
    if tried:
        lines.append("tried and lost:")
        width = max(len(step.route or "") for step in tried)
        for step in tried:
            if step.route is None:
                lines.append(f"  ({step.reason})")
            else:
                lines.append(f"  {step.route:<{width}}  {step.reason}")
    return "\n".join(lines)


def render_table(table: RouteTable[Any]) -> str:
    lines: list[str] = []
    for host_table in table.host_tables():
        lines.extend(_render_host_table(host_table))
    if not lines:
        lines.append("no routes")
    if table.diagnostics:
        lines.append("diagnostics:")
        lines.extend(f"  {message}" for message in table.diagnostics)
    return "\n".join(lines)


def _render_host_table(host_table: HostTable[Any]) -> list[str]:
    lines = [f"{host_table.title}:"]
    if host_table.exact:
        lines.append("  exact:")
        for path in sorted(host_table.exact):
            lines.extend(_render_group(host_table.exact[path]))
    if host_table.regex:
        lines.append("  regex (in order):")
        for _pattern, group in host_table.regex:
            lines.extend(_render_group(group))
    if host_table.prefix:
        lines.append("  prefix (longest first):")
        for key in sorted(host_table.prefix, key=lambda k: (-len(k), k)):
            lines.extend(_render_group(host_table.prefix[key]))
    return lines


def _render_group(group: tuple[CompiledRoute[Any], ...]) -> list[str]:
    lines = []
    for route in group:
        line = f"    {route.path}  -> {target_name(route.target)}  [{route.name}]"
        if route.matchers:
            line += f"  if {route.describe_matchers()}"
        if route.action is not None:
            line += f"  ({route.action.describe()})"
        lines.append(line)
    return lines
