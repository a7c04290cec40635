"""Refinements of the model: errors land on the field at fault, all of them at once."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from portway.config import RouteConfig, ServiceConfig


def errors_of(model: type[RouteConfig] | type[ServiceConfig], data: dict[str, Any]) -> list[Any]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return [(error["loc"], error["msg"]) for error in caught.value.errors(include_url=False)]


def test_path_error_is_at_path_and_comes_with_other_errors() -> None:
    errors = errors_of(RouteConfig, {"path": "api", "hosts": ["a:1"]})
    assert errors == [
        (("hosts", 0), "Value error, a route host has no port: 'a:1'"),
        (("service",), "Field required"),
        (("path",), "path must start with '/': 'api'"),
    ]


def test_path_alone() -> None:
    assert errors_of(RouteConfig, {"path": "  x ", "service": "s"}) == [
        (("path",), "path must start with '/': 'x'")
    ]


@pytest.mark.parametrize("path_type", ["regex", "Regex"])
def test_regex_path_is_compiled(path_type: str) -> None:
    [(loc, message)] = errors_of(RouteConfig, {"path": "(", "path_type": path_type, "service": "s"})
    assert loc == ("path",)
    assert message.startswith("invalid regular expression '('")


@pytest.mark.parametrize("path_type", ["Exact", "prefix"])
def test_plain_paths_need_a_slash(path_type: str) -> None:
    route = RouteConfig.model_validate({"path": "/x", "path_type": path_type, "service": "s"})
    assert route.path_type == path_type.lower()
    [(loc, _)] = errors_of(RouteConfig, {"path": "x", "path_type": path_type, "service": "s"})
    assert loc == ("path",)


def test_regex_path_need_not_start_with_a_slash() -> None:
    route = RouteConfig.model_validate({"path": "^/a.*", "path_type": "regex", "service": "s"})
    assert route.path == "^/a.*"


def test_path_of_the_wrong_type_is_left_to_the_field() -> None:
    assert errors_of(RouteConfig, {"path": 5, "service": "s"}) == [
        (("path",), "Input should be a valid string")
    ]


def test_unknown_path_type_skips_the_path_check() -> None:
    [(loc, _)] = errors_of(RouteConfig, {"path": "x", "path_type": "glob", "service": "s"})
    assert loc == ("path_type",)


def test_hosts_and_methods_are_checked_item_by_item() -> None:
    errors = errors_of(
        RouteConfig, {"hosts": ["ok.example", "*."], "methods": ["get", "P0ST"], "service": "s"}
    )
    assert errors == [
        (
            ("hosts", 1),
            "Value error, a wildcard host needs a domain after '*.' such as '*.example.com'",
        ),
        (("methods", 1), "Value error, not an HTTP method: 'P0ST'"),
    ]


def test_instance_shorthand() -> None:
    service = ServiceConfig.model_validate({"instances": ["h:1", {"address": "h:2", "weight": 5}]})
    assert [(i.address, i.weight) for i in service.instances] == [("h:1", 1), ("h:2", 5)]
    assert errors_of(ServiceConfig, {"instances": [None]}) == [
        (
            ("instances", 0),
            "Value error, expected an address 'host:port' or a mapping with 'address', got None",
        )
    ]
