"""Method, header and query matchers built from real config models."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from portway.routing import HeaderMatcher, MethodMatcher, QueryMatcher, build_matchers
from portway.routing.matchers import Matcher
from tests.unit.routing.builders import request, route


def only_matcher(**fields: Any) -> Matcher:
    matchers = build_matchers(route(**fields))
    assert len(matchers) == 1
    return matchers[0]


# ---------------------------------------------------------------------------------------- method


def test_method_in_set() -> None:
    matcher = only_matcher(methods=["get", "HEAD"])
    assert isinstance(matcher, MethodMatcher)
    assert matcher.matches(request(method="GET"))
    assert matcher.matches(request(method="HEAD"))
    assert not matcher.matches(request(method="POST"))
    assert matcher.failure(request(method="POST")) == "method POST not in {GET, HEAD}"
    assert matcher.describe() == "method in {GET, HEAD}"


def test_method_is_case_sensitive() -> None:
    """RFC 9110 §9.1: the method token is case-sensitive; "get" is not GET."""
    assert not only_matcher(methods=["GET"]).matches(request(method="get"))


def test_no_methods_means_no_method_matcher() -> None:
    assert build_matchers(route()) == ()


# ---------------------------------------------------------------------------------------- header


def test_header_exact() -> None:
    matcher = only_matcher(headers=[{"name": "X-Canary", "exact": "1"}])
    assert isinstance(matcher, HeaderMatcher)
    assert matcher.matches(request(headers={"X-CANARY": "1"}))  # field names are case-insensitive
    assert not matcher.matches(request(headers={"x-canary": "2"}))
    assert not matcher.matches(request(headers={"x-canary": "11"}))
    assert matcher.failure(request(headers={"x-canary": "2"})) == "header x-canary: '2' != '1'"
    assert not matcher.matches(request())
    assert matcher.failure(request()) == "header x-canary absent"
    assert matcher.describe() == "header x-canary == '1'"


def test_header_exact_compares_the_combined_value_of_repeated_fields() -> None:
    """RFC 9110 §5.3: repeated field lines combine into one comma-separated value."""
    matcher = only_matcher(headers=[{"name": "x-tag", "exact": "a, b"}])
    repeated = request()
    repeated.headers = [(b"x-tag", b"a"), (b"x-tag", b"b")]
    assert matcher.matches(repeated)
    assert not matcher.matches(request(headers={"x-tag": "a"}))


def test_header_regex_is_anchored() -> None:
    matcher = only_matcher(headers=[{"name": "x-version", "regex": "v[0-9]"}])
    assert matcher.matches(request(headers={"x-version": "v2"}))
    assert not matcher.matches(request(headers={"x-version": "v22"}))
    assert not matcher.matches(request(headers={"x-version": "xv2"}))
    assert (
        matcher.failure(request(headers={"x-version": "v22"}))
        == "header x-version: 'v22' does not match /v[0-9]/"
    )
    assert matcher.failure(request()) == "header x-version absent"
    assert matcher.describe() == "header x-version ~ /v[0-9]/"


def test_header_present() -> None:
    matcher = only_matcher(headers=[{"name": "authorization", "present": True}])
    assert matcher.matches(request(headers={"Authorization": "Bearer x"}))
    assert matcher.matches(request(headers={"authorization": ""}))  # an empty field is present
    assert not matcher.matches(request())
    assert matcher.failure(request()) == "header authorization absent"
    assert matcher.describe() == "header authorization present"


def test_header_present_false_requires_absence() -> None:
    matcher = only_matcher(headers=[{"name": "x-debug", "present": False}])
    assert matcher.matches(request())
    assert matcher.matches(request(headers={"x-other": "1"}))
    assert not matcher.matches(request(headers={"x-debug": "1"}))
    assert matcher.failure(request(headers={"x-debug": "1"})) == (
        "header x-debug present, must be absent"
    )
    assert matcher.describe() == "header x-debug absent"


# ---------------------------------------------------------------------------------------- query


def test_query_exact_matches_any_value() -> None:
    matcher = only_matcher(query=[{"name": "v", "exact": "2"}])
    assert isinstance(matcher, QueryMatcher)
    assert matcher.matches(request(query="v=2"))
    assert matcher.matches(request(query="v=1&v=2"))
    assert not matcher.matches(request(query="v=1"))
    assert not matcher.matches(request(query="V=2"))  # parameter names are case-sensitive
    assert matcher.failure(request(query="v=1")) == "query v: '1' != '2'"
    assert matcher.failure(request(query="v=1&v=3")) == "query v: none of ['1', '3'] != '2'"
    assert matcher.failure(request(query="x=2")) == "query v absent"


def test_query_values_are_percent_decoded() -> None:
    """Values compare decoded (application/x-www-form-urlencoded: "+" is a space)."""
    matcher = only_matcher(query=[{"name": "q", "exact": "a b/c"}])
    assert matcher.matches(request(query="q=a%20b%2Fc"))
    assert matcher.matches(request(query="q=a+b/c"))


def test_query_regex_matches_any_value_anchored() -> None:
    matcher = only_matcher(query=[{"name": "id", "regex": "[0-9]+"}])
    assert matcher.matches(request(query="id=abc&id=42"))
    assert not matcher.matches(request(query="id=42x"))
    assert matcher.failure(request(query="id=42x")) == "query id: '42x' does not match /[0-9]+/"


def test_query_present_and_absent() -> None:
    present = only_matcher(query=[{"name": "debug", "present": True}])
    absent = only_matcher(query=[{"name": "debug", "present": False}])
    assert present.matches(request(query="debug"))  # a blank value still counts
    assert present.matches(request(query="debug="))
    assert not present.matches(request(query="debugger=1"))
    assert present.failure(request()) == "query debug absent"
    assert absent.matches(request(query="x=1"))
    assert not absent.matches(request(query="debug=0"))
    assert absent.failure(request(query="debug=0")) == "query debug present, must be absent"


# ---------------------------------------------------------------------------------------- build


def test_matchers_are_built_cheapest_first() -> None:
    matchers = build_matchers(
        route(
            methods=["GET"],
            headers=[{"name": "a", "exact": "1"}, {"name": "b", "present": True}],
            query=[{"name": "c", "exact": "1"}],
        )
    )
    assert [type(m) for m in matchers] == [
        MethodMatcher,
        HeaderMatcher,
        HeaderMatcher,
        QueryMatcher,
    ]
    assert [m.describe() for m in matchers] == [
        "method in {GET}",
        "header a == '1'",
        "header b present",
        "query c == '1'",
    ]


@pytest.mark.parametrize(
    "match",
    [
        {"name": "x"},  # no condition
        {"name": "x", "exact": "1", "present": True},  # two conditions
        {"name": "x", "regex": "("},  # does not compile
    ],
)
def test_bad_match_configs_are_refused_by_the_config_model(match: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        route(headers=[match])
