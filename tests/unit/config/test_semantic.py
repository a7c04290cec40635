"""Rules across fields and sections: checked directly, and located by the loader."""

from __future__ import annotations

from typing import Any

import pytest

from portway.config import Config
from portway.config.semantic import check
from tests.unit.config.conftest import IssuesIn, where


def config(**sections: Any) -> Config:
    return Config.model_validate(sections)


def service(**fields: Any) -> dict[str, Any]:
    return {"instances": [], **fields}


def test_a_sound_config_has_no_issues() -> None:
    sound = config(
        listeners=[{"address": "0.0.0.0:80"}, {"address": "0.0.0.0:81"}],
        services={
            "users": service(instances=["10.0.0.1:80", "10.0.0.2:80"], sticky={}),
            "search.v2": service(algorithm="maglev", hash_on={"cookie": "sid"}),
            "empty": service(),  # no instances: answers 503, not a config error
        },
        routes=[
            {"name": "a", "path": "/users", "service": "users"},
            {"name": "b", "path": "/users", "methods": ["POST"], "service": "users"},
            {"path": "/search", "service": "search.v2"},
            {"path": "/search", "hosts": ["example.com"], "service": "empty"},
        ],
    )
    assert check(sound) == []


def test_unknown_service() -> None:
    issues = check(config(services={"b": service(), "a": service()}, routes=[{"service": "c"}]))
    assert issues == [(("routes", 0, "service"), "unknown service 'c' (defined: b, a)")]


def test_unknown_service_when_none_are_defined() -> None:
    issues = check(config(routes=[{"service": "users"}]))
    assert issues == [
        (("routes", 0, "service"), "unknown service 'users' (no services are defined)")
    ]


def test_duplicate_route_names() -> None:
    routes = [
        {"name": "api", "path": "/a", "service": "s"},
        {"name": "web", "path": "/b", "service": "s"},
        {"name": "api", "path": "/c", "service": "s"},
    ]
    issues = check(config(services={"s": service()}, routes=routes))
    assert issues == [(("routes", 2, "name"), "duplicate route name 'api' (also routes[0])")]


def test_a_name_that_clashes_with_a_default_route_name() -> None:
    routes = [
        {"name": "route-1", "path": "/a", "service": "s"},
        {"path": "/b", "service": "s"},  # its default name is "route-1"
        {"name": "route-0", "path": "/c", "service": "s"},  # routes[0] has a name of its own
        {"name": "route-1", "path": "/d", "service": "s"},
    ]
    issues = check(config(services={"s": service()}, routes=routes))
    assert issues == [
        (("routes", 1), "the default name of routes[1], 'route-1', is taken by routes[0]"),
        (("routes", 3, "name"), "duplicate route name 'route-1' (also routes[0])"),
    ]


def test_a_name_that_clashes_with_an_earlier_default_name() -> None:
    routes = [{"path": "/a", "service": "s"}, {"name": "route-0", "path": "/b", "service": "s"}]
    issues = check(config(services={"s": service()}, routes=routes))
    assert issues == [
        (
            ("routes", 1, "name"),
            "duplicate route name 'route-0' (also the default name of routes[0])",
        )
    ]


def test_duplicate_listener_addresses() -> None:
    listeners = [{"address": "LOCALHOST:80"}, {"address": "localhost:80"}]
    issues = check(config(listeners=listeners))
    assert issues == [
        (
            ("listeners", 1, "address"),
            "duplicate listener address 'localhost:80' (also listeners[0])",
        )
    ]


@pytest.mark.parametrize("name", ["Users", "users_", "-users", "user service", "ユーザー", ""])
def test_bad_service_names(name: str) -> None:
    [(path, message)] = check(config(services={name: service()}))
    assert path == ("services", name)
    assert message.startswith(f"service name '{name}' must be lower-case letters, digits")


@pytest.mark.parametrize("name", ["a", "users", "users-v2", "api.example", "a_b", "9"])
def test_good_service_names(name: str) -> None:
    assert check(config(services={name: service()})) == []


@pytest.mark.parametrize("algorithm", ["ring_hash", "maglev"])
def test_sticky_with_a_hashing_algorithm(algorithm: str) -> None:
    issues = check(config(services={"s": service(algorithm=algorithm, sticky={})}))
    assert issues == [
        (
            ("services", "s", "sticky"),
            f"sticky sessions and algorithm '{algorithm}' both choose the instance: pick one",
        )
    ]


@pytest.mark.parametrize("algorithm", ["round_robin", "least_request", "random"])
def test_hash_on_without_a_hashing_algorithm(algorithm: str) -> None:
    issues = check(config(services={"s": service(algorithm=algorithm, hash_on={"header": "x"})}))
    assert issues == [
        (
            ("services", "s", "hash_on"),
            f"hash_on only applies to algorithm ring_hash or maglev, not '{algorithm}'",
        )
    ]


def test_duplicate_instance_addresses() -> None:
    instances = ["10.0.0.1:80", "10.0.0.2:80", {"address": "10.0.0.1:80", "weight": 2}]
    issues = check(config(services={"s": service(instances=instances)}))
    assert issues == [
        (
            ("services", "s", "instances", 2),
            "duplicate instance address '10.0.0.1:80' (also instances[0])",
        )
    ]


def test_same_address_in_different_services_is_fine() -> None:
    services = {"a": service(instances=["h:1"]), "b": service(instances=["h:1"])}
    assert check(config(services=services)) == []


def test_routes_with_the_same_match_in_any_order() -> None:
    first = {
        "name": "a",
        "hosts": ["x.example", "y.example"],
        "path": "/api",
        "methods": ["GET", "PUT"],
        "headers": [{"name": "X-A", "exact": "1"}, {"name": "x-b", "present": True}],
        "query": [{"name": "q", "regex": "[0-9]+"}],
        "service": "s",
    }
    second = {
        **first,
        "name": "b",
        "hosts": ["Y.example", "x.example"],
        "methods": ["put", "get"],
        "headers": [{"name": "x-b", "present": True}, {"name": "x-a", "exact": "1"}],
    }
    issues = check(config(services={"s": service()}, routes=[first, second]))
    assert issues == [(("routes", 1), "route 'b' can never match: route 'a' has the same match")]


@pytest.mark.parametrize(
    "change",
    [
        {"hosts": ["z.example"]},
        {"path": "/api/"},
        {"path_type": "exact"},
        {"methods": ["GET"]},
        {"headers": [{"name": "x-a", "exact": "2"}]},
        {"query": [{"name": "q", "present": True}]},
    ],
)
def test_routes_that_differ_in_one_condition_are_fine(change: dict[str, Any]) -> None:
    base = {"hosts": ["x.example"], "path": "/api", "service": "s"}
    routes = [base, {**base, **change}]
    assert check(config(services={"s": service()}, routes=routes)) == []


def test_unnamed_shadowed_route_is_named_by_index() -> None:
    routes = [{"path": "/", "service": "s"}, {"service": "s"}]
    issues = check(config(services={"s": service()}, routes=routes))
    assert issues == [
        (("routes", 1), "route 'routes[1]' can never match: route 'routes[0]' has the same match")
    ]


def test_loader_locates_semantic_issues(issues_in: IssuesIn) -> None:
    issues = issues_in(
        """
        services:
          users:
            instances: [10.0.0.1:80, 10.0.0.1:80]
          Search: {instances: []}
        routes:
          - name: users
            service: users
          - name: users
            path: /other
            service: search
        """
    )
    assert [(*where(i), i.message) for i in issues] == [
        (
            3,
            30,
            "services.users.instances[1]",
            "duplicate instance address '10.0.0.1:80' (also instances[0])",
        ),
        (
            4,
            3,
            "services.Search",
            "service name 'Search' must be lower-case letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit",
        ),
        (8, 5, "routes[1].name", "duplicate route name 'users' (also routes[0])"),
        (10, 5, "routes[1].service", "unknown service 'search' (defined: users, Search)"),
    ]
