"""The SNI table of a passthrough listener: exact names, one-label wildcards, the default."""

from __future__ import annotations

from typing import Any

import pytest

from portway.config.tls import PassthroughConfig
from portway.tls.sni_routes import DEFAULT_RULE, SniRoutes, compile_sni_routes

SERVICES = {"a": "service-a", "wild": "service-wild", "exact": "service-exact", "d": "service-d"}


def table(routes: list[dict[str, Any]], default: str | None = None) -> SniRoutes[str]:
    config = PassthroughConfig.model_validate({"routes": routes, "default_service": default})
    return compile_sni_routes(config, SERVICES)


def test_exact_name_then_wildcard_then_default() -> None:
    routes = table(
        [
            {"hosts": ["*.example.com"], "service": "wild"},
            {"hosts": ["a.example.com"], "service": "a"},
        ],
        default="d",
    )
    assert routes.select("a.example.com") == "service-a"  # exact wins over an earlier wildcard
    assert routes.select("b.example.com") == "service-wild"
    assert routes.select("other.org") == "service-d"
    assert routes.select(None) == "service-d"  # no SNI: the default
    found = routes.match("b.example.com")
    assert found is not None and (found.service, found.rule) == ("wild", "*.example.com")
    found = routes.match(None)
    assert found is not None and (found.service, found.rule) == ("d", DEFAULT_RULE)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.example.com", "service-wild"),
        ("xn--caf-dma.example.com", "service-wild"),
        ("a.b.example.com", None),  # a wildcard covers exactly one label
        ("example.com", None),  # and not the domain itself
        ("aexample.com", None),
        ("a.example.org", None),
        ("com", None),
    ],
)
def test_a_wildcard_covers_exactly_one_label(name: str, expected: str | None) -> None:
    assert table([{"hosts": ["*.example.com"], "service": "wild"}]).select(name) == expected


def test_without_default_unrouted_and_nameless_connections_get_nothing() -> None:
    routes = table([{"hosts": ["a.example.com"], "service": "a"}])
    assert routes.select("b.example.com") is None
    assert routes.select(None) is None
    assert routes.match(None) is None


def test_a_deeper_wildcard_is_its_own_domain() -> None:
    routes = table(
        [
            {"hosts": ["*.example.com"], "service": "wild"},
            {"hosts": ["*.eu.example.com"], "service": "exact"},
        ]
    )
    assert routes.select("eu.example.com") == "service-wild"
    assert routes.select("x.eu.example.com") == "service-exact"


def test_config_hosts_are_normalized_like_the_parsed_name() -> None:
    routes = table([{"hosts": ["API.Example.COM.", "*.Apps.Example.com"], "service": "a"}])
    assert routes.select("api.example.com") == "service-a"
    assert routes.select("x.apps.example.com") == "service-a"
    assert len(routes) == 2


def test_a_route_lists_several_hosts() -> None:
    routes = table([{"hosts": ["a.example.com", "b.example.com", "*.c.example"], "service": "a"}])
    assert [routes.select(n) for n in ("a.example.com", "b.example.com", "x.c.example")] == [
        "service-a"
    ] * 3


def test_a_host_listed_twice_keeps_its_first_route_and_says_so() -> None:
    routes = table(
        [
            {"hosts": ["a.example.com"], "service": "a"},
            {"hosts": ["a.example.com", "z.example.com"], "service": "exact"},
            {"hosts": ["a.example.com"], "service": "a"},  # same service: nothing to report
        ]
    )
    assert routes.select("a.example.com") == "service-a"
    assert routes.select("z.example.com") == "service-exact"
    assert routes.diagnostics == [
        "passthrough route 1: host 'a.example.com' already goes to service 'a' "
        "(an earlier route); this one never does"
    ]


def test_unknown_services_are_skipped_and_reported() -> None:
    routes = table([{"hosts": ["a.example.com"], "service": "nope"}], default="gone")
    assert routes.select("a.example.com") is None
    assert routes.default is None
    assert len(routes.diagnostics) == 2
    assert "'nope' is not defined" in routes.diagnostics[0]
    assert "'gone' is not defined" in routes.diagnostics[1]


def test_targets_are_stored_as_given() -> None:
    """Generic over the target: the data plane stores Service objects, here any object."""
    marker = object()
    config = PassthroughConfig.model_validate({"routes": [{"hosts": ["m.x"], "service": "m"}]})
    routes = compile_sni_routes(config, {"m": marker})
    assert routes.select("m.x") is marker
