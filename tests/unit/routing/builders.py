"""Small builders shared by the routing tests: real config models, real requests, simple targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from portway.config.model import RouteConfig
from portway.messages import Request
from portway.routing import RouteTable, compile_routes


@dataclass(frozen=True)
class Service:
    """Stands in for the data plane's service object: routing only keeps a reference and a name."""

    name: str


def route(service: str = "svc", **fields: Any) -> RouteConfig:
    return RouteConfig.model_validate({"service": service, **fields})


def table(*routes: RouteConfig, merge_slashes: bool = False) -> RouteTable[Service]:
    """A table whose targets are named after every service the routes mention."""
    targets = {r.service: Service(r.service) for r in routes}
    return compile_routes(routes, targets, merge_slashes=merge_slashes)


def request(
    path: str = "/",
    host: str = "example.com",
    method: str = "GET",
    query: str = "",
    headers: dict[str, str] | None = None,
) -> Request:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    return Request(method, host, path, query, raw)


def selected(routes: RouteTable[Service], req: Request) -> str | None:
    """The name of the route ``req`` selects, or None."""
    found = routes.select(req)
    return found.name if found is not None else None
