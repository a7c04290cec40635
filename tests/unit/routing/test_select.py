"""Route selection: host tiers, path kinds, matcher ordering, compile diagnostics, scale."""

from __future__ import annotations

import pytest

from portway.routing import compile_routes
from portway.routing import table as route_table
from tests.unit.routing.builders import Service, request, route, selected, table

# ------------------------------------------------------------------------------------------ hosts


def test_exact_host_is_preferred_over_wildcard_and_any_host() -> None:
    routes = table(
        route(name="any", path="/"),
        route(name="wild", hosts=["*.example.com"], path="/"),
        route(name="exact", hosts=["api.example.com"], path="/"),
    )
    assert selected(routes, request(host="api.example.com")) == "exact"
    assert selected(routes, request(host="www.example.com")) == "wild"
    assert selected(routes, request(host="other.org")) == "any"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("foo.example.com", "wild"),  # one extra label: covered
        ("example.com", None),  # Kubernetes: "*.foo.com" does not match "foo.com"
        ("a.b.example.com", None),  # nor "baz.bar.foo.com" (exactly one label)
        ("fooexample.com", None),
        ("foo.example.org", None),
    ],
)
def test_wildcard_host_covers_exactly_one_label(host: str, expected: str | None) -> None:
    """https://kubernetes.io/docs/concepts/services-networking/ingress/#hostname-wildcards"""
    routes = table(route(name="wild", hosts=["*.example.com"], path="/"))
    assert selected(routes, request(host=host)) == expected


def test_no_path_match_under_exact_host_falls_through_to_wildcard_then_any_host() -> None:
    routes = table(
        route(name="exact-api", hosts=["api.example.com"], path="/api"),
        route(name="wild-web", hosts=["*.example.com"], path="/web"),
        route(name="any-root", path="/"),
    )
    assert selected(routes, request("/api/x", host="api.example.com")) == "exact-api"
    assert selected(routes, request("/web/x", host="api.example.com")) == "wild-web"
    assert selected(routes, request("/other", host="api.example.com")) == "any-root"


def test_failed_matchers_under_exact_host_fall_through_to_wildcard() -> None:
    routes = table(
        route(name="exact", hosts=["api.example.com"], path="/", methods=["POST"]),
        route(name="wild", hosts=["*.example.com"], path="/"),
    )
    assert selected(routes, request(host="api.example.com", method="POST")) == "exact"
    assert selected(routes, request(host="api.example.com", method="GET")) == "wild"


def test_host_tier_outranks_path_specificity() -> None:
    """A host's own "/" wins over a longer or exact path among the routes without hosts."""
    routes = table(
        route(name="any-exact", path="/a/b", path_type="Exact"),
        route(name="host-root", hosts=["example.com"], path="/"),
    )
    assert selected(routes, request("/a/b", host="example.com")) == "host-root"
    assert selected(routes, request("/a/b", host="other.com")) == "any-exact"


def test_route_with_several_hosts_sits_in_each_host_table() -> None:
    routes = table(
        route(name="multi", hosts=["a.com", "b.com", "*.c.com", "a.com"], path="/x"),
        route(name="fallback", path="/"),
    )
    for host in ("a.com", "b.com", "x.c.com"):
        assert selected(routes, request("/x", host=host)) == "multi"
    assert selected(routes, request("/x", host="d.com")) == "fallback"
    assert set(routes.exact_hosts) == {"a.com", "b.com"}
    assert set(routes.wildcard_hosts) == {"c.com"}
    assert routes.routes[0].hosts == ("a.com", "b.com", "*.c.com")


def test_no_routes_means_no_match() -> None:
    assert selected(table(), request()) is None


# ------------------------------------------------------------------------------------------- paths


def test_exact_then_regex_then_prefix() -> None:
    routes = table(
        route(name="prefix", path="/users"),
        route(name="regex", path="/users/[0-9]+", path_type="regex"),
        route(name="exact", path="/users/42", path_type="exact"),
    )
    assert selected(routes, request("/users/42")) == "exact"
    assert selected(routes, request("/users/7")) == "regex"
    assert selected(routes, request("/users/me")) == "prefix"


def test_regex_routes_are_tried_in_declared_order_and_are_anchored() -> None:
    routes = table(
        route(name="first", path="/v[0-9]+/.*", path_type="regex"),
        route(name="second", path="/v1/.*", path_type="regex"),
        route(name="partial", path="/x", path_type="regex"),
    )
    assert selected(routes, request("/v1/a")) == "first"
    assert selected(routes, request("/x")) == "partial"
    assert selected(routes, request("/x/y")) is None  # fullmatch, not search
    assert selected(routes, request("/a/x")) is None


def test_regex_lists_are_per_host() -> None:
    routes = table(
        route(name="r", hosts=["a.com"], path="/r.*", path_type="regex"),
        route(name="p", hosts=["b.com"], path="/"),
    )
    assert len(routes.exact_hosts["a.com"].regex) == 1
    assert routes.exact_hosts["b.com"].regex == ()
    assert selected(routes, request("/rx", host="b.com")) == "p"


def test_identical_regex_sources_share_one_compiled_pattern() -> None:
    routes = table(
        route(name="a", hosts=["a.com"], path="/r.*", path_type="regex"),
        route(name="b", hosts=["b.com"], path="/r.*", path_type="regex"),
    )
    assert routes.routes[0].pattern is routes.routes[1].pattern


def test_rule_paths_are_normalized_like_request_paths() -> None:
    routes = table(
        route(name="tilde", path="/%7euser/./docs", path_type="exact"),
        route(name="encoded-slash", path="/a%2fb"),
    )
    assert routes.routes[0].path == "/~user/docs"
    assert selected(routes, request("/~user/docs")) == "tilde"
    assert selected(routes, request("/a%2Fb/c")) == "encoded-slash"
    assert selected(routes, request("/a/b")) is None  # %2F is not a separator


def test_merge_slashes_applies_to_rule_paths() -> None:
    merged = table(route(name="r", path="//a//b", path_type="exact"), merge_slashes=True)
    kept = table(route(name="r", path="//a//b", path_type="exact"))
    assert merged.routes[0].path == "/a/b"
    assert selected(merged, request("/a/b")) == "r"
    assert selected(kept, request("/a/b")) is None
    assert selected(kept, request("//a//b")) == "r"


def test_prefix_walk_with_empty_segments() -> None:
    """Without merge_slashes, "//" is an empty path element (RFC 3986 §3.3)."""
    routes = table(route(name="a", path="/a"), route(name="root", path="/"))
    assert selected(routes, request("/a//b")) == "a"
    assert selected(routes, request("//a")) == "root"


# ---------------------------------------------------------------------------------------- matchers


def test_more_matchers_are_tried_first_then_declared_order() -> None:
    routes = table(
        route(name="plain", path="/api"),
        route(name="canary", path="/api", headers=[{"name": "x-canary", "exact": "1"}]),
        route(
            name="canary-post",
            path="/api",
            methods=["POST"],
            headers=[{"name": "x-canary", "exact": "1"}],
        ),
        route(name="debug", path="/api/", query=[{"name": "debug", "present": True}]),
    )
    canary = {"x-canary": "1"}
    assert selected(routes, request("/api", method="POST", headers=canary)) == "canary-post"
    assert selected(routes, request("/api", headers=canary)) == "canary"
    # "canary" and "debug" both have one matcher and the same key: declared order decides.
    assert selected(routes, request("/api", query="debug", headers=canary)) == "canary"
    assert selected(routes, request("/api", query="debug")) == "debug"
    assert selected(routes, request("/api")) == "plain"


def test_failed_matchers_continue_to_shorter_prefix() -> None:
    routes = table(
        route(name="root", path="/"),
        route(name="v2-only", path="/api", headers=[{"name": "x-api", "exact": "2"}]),
    )
    assert selected(routes, request("/api/x", headers={"x-api": "2"})) == "v2-only"
    assert selected(routes, request("/api/x", headers={"x-api": "1"})) == "root"


def test_failed_matchers_continue_from_exact_to_regex_to_prefix() -> None:
    routes = table(
        route(name="exact", path="/a", path_type="exact", methods=["PUT"]),
        route(name="regex", path="/a", path_type="regex", methods=["POST"]),
        route(name="prefix", path="/a"),
    )
    assert selected(routes, request("/a", method="PUT")) == "exact"
    assert selected(routes, request("/a", method="POST")) == "regex"
    assert selected(routes, request("/a", method="GET")) == "prefix"


def test_no_candidate_passing_matchers_means_no_match() -> None:
    routes = table(route(name="r", path="/", methods=["GET"]))
    assert selected(routes, request(method="DELETE")) is None


# ------------------------------------------------------------------------------------------ compile


def test_compiled_route_holds_the_target_itself() -> None:
    users = Service("users")
    compiled = compile_routes([route("users", path="/u")], {"users": users})
    found = compiled.select(request("/u"))
    assert found is not None
    assert found.target is users
    assert (found.name, found.index, found.path, found.path_type) == ("route-0", 0, "/u", "prefix")
    if not route_table.__file__.endswith(".py"):  # compiled: Final attributes are not writable
        with pytest.raises(AttributeError):
            found.name = "other"  # type: ignore[misc]


def test_route_with_unknown_service_is_skipped_and_reported() -> None:
    compiled = compile_routes(
        [route("missing", path="/"), route("known", path="/k")],
        {"known": Service("known")},
    )
    assert [r.name for r in compiled.routes] == ["route-1"]  # names keep the declared index
    assert compiled.diagnostics == [
        "route route-0 (routes[0]) skipped: service 'missing' is not defined"
    ]
    assert selected(compiled, request("/")) is None
    assert selected(compiled, request("/k")) == "route-1"


def test_route_whose_path_cannot_be_normalized_is_skipped_and_reported() -> None:
    routes = table(route(name="bad", path="/a%zz"), route(name="good", path="/"))
    assert [r.name for r in routes.routes] == ["good"]
    assert len(routes.diagnostics) == 1
    assert "route bad (routes[0]) skipped" in routes.diagnostics[0]
    assert "percent-encoding" in routes.diagnostics[0]


def test_shadowed_routes_are_reported() -> None:
    routes = table(
        route(name="first", path="/a/"),
        route(name="second", path="/a"),  # same key: the trailing "/" is ignored
        route(name="gated", path="/a", methods=["GET"]),
    )
    assert routes.diagnostics == [
        "route second can never be selected in host table for any host: "
        "route first has the same prefix /a/ and no matchers"
    ]
    assert selected(routes, request("/a", method="POST")) == "first"
    assert selected(routes, request("/a", method="GET")) == "gated"


# ------------------------------------------------------------------------------------------- scale


def test_ten_thousand_routes_select_correctly() -> None:
    configs = []
    for i in range(2500):
        configs.append(route(f"s{i % 7}", name=f"prefix-{i}", path=f"/svc{i}"))
        configs.append(route(f"s{i % 7}", name=f"deep-{i}", path=f"/svc{i}/v1/items"))
        configs.append(
            route(f"s{i % 7}", name=f"exact-{i}", path=f"/svc{i}/health", path_type="exact")
        )
        configs.append(route(f"s{i % 7}", name=f"host-{i}", hosts=[f"h{i}.example.com"], path="/"))
    assert len(configs) == 10_000
    routes = table(*configs)
    assert routes.diagnostics == []
    assert selected(routes, request("/svc1234")) == "prefix-1234"
    assert selected(routes, request("/svc1234/v1/items/9")) == "deep-1234"
    assert selected(routes, request("/svc1234/v1/other")) == "prefix-1234"
    assert selected(routes, request("/svc1234/health")) == "exact-1234"
    assert selected(routes, request("/svc12345")) is None
    assert selected(routes, request("/svc2499/health", host="h7.example.com")) == "host-7"
    assert selected(routes, request("/svc2499/health", host="x.example.com")) == "exact-2499"
    found = routes.select(request("/svc1234"))
    assert found is not None and found.target == Service("s2")
