"""Tracing, explain, the text renderings, and select checked against a brute force."""

from __future__ import annotations

import random
from typing import Any

from portway.messages import Request
from portway.routing import (
    CompiledRoute,
    RouteTable,
    TraceStep,
    explain,
    render_explanation,
    render_table,
)
from tests.unit.routing.builders import Service, request, route, table


def api_table() -> RouteTable[Service]:
    return table(
        route("orders", name="orders", hosts=["api.example.com"], path="/orders"),
        route(
            "users",
            name="users-canary",
            hosts=["api.example.com"],
            path="/users",
            headers=[{"name": "x-canary", "exact": "1"}],
        ),
        route("users", name="users", hosts=["*.example.com"], path="/users"),
        route("health", name="health", path="/healthz", path_type="exact", methods=["GET"]),
        route("web", name="web", path="/"),
    )


def test_trace_records_every_route_considered_and_each_host_table_passed() -> None:
    steps: list[TraceStep] = []
    found = api_table().select(request("/users/7", host="api.example.com"), steps)
    assert found is not None and found.name == "users"
    assert steps == [
        TraceStep("users-canary", "lost", "path matches prefix /users but header x-canary absent"),
        TraceStep("orders", "lost", "path /users/7 does not match prefix /orders"),
        TraceStep(None, "lost", "host table api.example.com had no match"),
        TraceStep("users", "matched", "path /users/7 matches prefix /users"),
    ]


def test_trace_names_routes_a_winner_shadowed() -> None:
    steps: list[TraceStep] = []
    found = api_table().select(request("/healthz", host="web.example.org"), steps)
    assert found is not None and found.name == "health"
    assert steps == [
        TraceStep(None, "lost", "no host table for web.example.org"),
        TraceStep(None, "lost", "no wildcard host table covers web.example.org"),
        TraceStep("health", "matched", "path /healthz matches exact /healthz and method in {GET}"),
        TraceStep("web", "lost", "not tried: health was selected first"),
    ]


def test_trace_when_nothing_matches() -> None:
    routes = table(
        route(name="r", path="/v[0-9]+", path_type="regex"),
        route(name="e", path="/a", path_type="exact"),
        route(name="gated", path="/x", query=[{"name": "debug", "present": True}]),
    )
    steps: list[TraceStep] = []
    assert routes.select(request("/x/y"), steps) is None
    assert steps == [
        TraceStep("r", "lost", "path /x/y does not match regex /v[0-9]+"),
        TraceStep("gated", "lost", "path matches prefix /x but query debug absent"),
        TraceStep("e", "lost", "path /x/y is not exact /a"),
        TraceStep(None, "lost", "host table for any host had no match"),
    ]


def test_explain_returns_the_routed_route_and_the_trace() -> None:
    routes = api_table()
    req = request("/users/7", host="api.example.com", query="a=1", headers={"x-canary": "1"})
    explanation = explain(routes, req)
    assert explanation.route is routes.select(req)
    assert explanation.request == "GET api.example.com/users/7?a=1"
    assert explanation.steps[0] == TraceStep(
        "users-canary", "matched", "path /users/7 matches prefix /users and header x-canary == '1'"
    )


def test_render_explanation_of_a_match() -> None:
    text = render_explanation(explain(api_table(), request("/users/7", host="api.example.com")))
    assert text == "\n".join(
        [
            "request: GET api.example.com/users/7",
            "result: route users -> users (prefix /users)",
            "  because path /users/7 matches prefix /users",
            "tried and lost:",
            "  users-canary  path matches prefix /users but header x-canary absent",
            "  orders        path /users/7 does not match prefix /orders",
            "  (host table api.example.com had no match)",
        ]
    )


def test_render_explanation_without_match() -> None:
    routes = table(route(name="only", path="/a", methods=["POST"]))
    text = render_explanation(explain(routes, request("/a/b")))
    assert text == "\n".join(
        [
            "request: GET example.com/a/b",
            "result: no route matched (404)",
            "tried and lost:",
            "  only  path matches prefix /a but method GET not in {POST}",
            "  (host table for any host had no match)",
        ]
    )


def test_render_table() -> None:
    routes = api_table()
    text = render_table(
        RouteTable(
            routes.exact_hosts,
            routes.wildcard_hosts,
            routes.any_host,
            routes.routes,
            ["route x skipped: example"],
        )
    )
    assert text == "\n".join(
        [
            "host table api.example.com:",
            "  prefix (longest first):",
            "    /orders  -> orders  [orders]",
            "    /users  -> users  [users-canary]  if header x-canary == '1'",
            "host table *.example.com:",
            "  prefix (longest first):",
            "    /users  -> users  [users]",
            "host table for any host:",
            "  exact:",
            "    /healthz  -> health  [health]  if method in {GET}",
            "  prefix (longest first):",
            "    /  -> web  [web]",
            "diagnostics:",
            "  route x skipped: example",
        ]
    )


def test_render_table_uses_str_for_targets_without_name() -> None:
    from portway.routing import compile_routes

    routes = compile_routes([route("a", path="/r.*", path_type="regex")], {"a": "backend-a"})
    assert render_table(routes) == "\n".join(
        ["host table for any host:", "  regex (in order):", "    /r.*  -> backend-a  [route-0]"]
    )
    assert render_table(compile_routes([], {})) == "no routes"


# -------------------------------------------------------------------- differential: brute force


def brute_force(routes: tuple[CompiledRoute[Service], ...], req: Request) -> str | None:
    """The documented semantics, route by route, with no index: the oracle for ``select``."""
    host = req.host
    parent = host.split(".", 1)[1] if "." in host and not host.startswith(".") else None
    tiers = [
        [r for r in routes if host in r.hosts],
        [r for r in routes if parent is not None and f"*.{parent}" in r.hosts],
        [r for r in routes if not r.hosts],
    ]
    path = req.path
    for tier in tiers:
        candidates: list[tuple[tuple[int, ...], CompiledRoute[Service]]] = []
        first_regex_index: dict[str, int] = {}
        for r in tier:
            order = (-len(r.matchers), r.index)
            if r.path_type == "exact" and r.path == path:
                candidates.append(((0, 0, *order), r))
            elif r.path_type == "regex" and r.pattern is not None and r.pattern.fullmatch(path):
                position = first_regex_index.setdefault(r.path, r.index)
                candidates.append(((1, position, *order), r))
            elif r.path_type == "prefix":
                rule = r.path.rstrip("/").split("/")[1:] if r.path != "/" else []
                if path.split("/")[1:][: len(rule)] == rule:
                    candidates.append(((2, -len(rule), *order), r))
        for _, r in sorted(candidates, key=lambda c: c[0]):
            if all(m.matches(req) for m in r.matchers):
                return r.name
    return None


def test_select_and_explain_agree_with_brute_force_on_random_tables() -> None:
    rng = random.Random(20240611)
    segments = ["a", "b", "ab"]
    hosts = ["a.com", "*.a.com", "b.a.com"]

    def random_path() -> str:
        path = "/" + "/".join(rng.choice(segments) for _ in range(rng.randint(0, 3)))
        return path + "/" if rng.random() < 0.2 and path != "/" else path

    checked = 0
    for _ in range(150):
        configs = []
        for i in range(rng.randint(1, 12)):
            kind = rng.choice(["exact", "prefix", "prefix", "regex"])
            path = random_path() if kind != "regex" else rng.choice(["/a.*", "/(a|b)/b", "/ab?"])
            extra: dict[str, Any] = {}
            if rng.random() < 0.3:
                extra["methods"] = ["GET"]
            if rng.random() < 0.3:
                extra["headers"] = [{"name": "x", "present": True}]
            configs.append(
                route(
                    name=f"r{i}",
                    path=path,
                    path_type=kind,
                    hosts=rng.sample(hosts, rng.randint(0, 2)),
                    **extra,
                )
            )
        routes = table(*configs)
        for _ in range(30):
            req = request(
                random_path(),
                host=rng.choice(["a.com", "b.a.com", "c.a.com", "x.b.a.com", "z.com"]),
                method=rng.choice(["GET", "POST"]),
                headers={"x": "1"} if rng.random() < 0.5 else {},
            )
            expected = brute_force(routes.routes, req)
            found = routes.select(req)
            assert (found.name if found else None) == expected, (configs, req)
            explained = explain(routes, req)
            assert explained.route is found
            winners = [s.route for s in explained.steps if s.outcome == "matched"]
            assert winners == ([found.name] if found else [])
            checked += 1
    assert checked == 4500
