"""Rewrites and redirects: config errors with their line, and what each makes of a request path."""

from __future__ import annotations

from typing import Any

import pytest

from portway.config.model import Config, RouteConfig
from portway.routing import compile_routes, render_table
from portway.routing.rewrite import Redirect, Rewrite
from tests.unit.config.conftest import IssuesIn, issues_in, where, write_yaml

__all__ = ["issues_in", "write_yaml"]  # fixtures used here


def action(**route: Any) -> Rewrite | Redirect:
    route.setdefault("service", None if "redirect" in route else "s")
    table = compile_routes([RouteConfig.model_validate(route)], {"s": "S"})
    assert not table.diagnostics
    found = table.routes[0].action
    assert found is not None
    return found


def rewritten(request_path: str, query: str = "", /, **route: Any) -> str:
    rewrite = action(**route)
    assert isinstance(rewrite, Rewrite)
    return rewrite.target(request_path, query).decode()


# The Gateway API's ReplacePrefixMatch table, plus encoded octets and the query.
@pytest.mark.parametrize(
    ("route_path", "replacement", "request_path", "expected"),
    [
        ("/api", "/", "/api", "/"),
        ("/api", "/", "/api/", "/"),
        ("/api", "/", "/api/x", "/x"),
        ("/api", "/", "/api/a%2Fb", "/a%2Fb"),
        ("/api/", "/", "/api/x", "/x"),
        ("/foo", "/xyz", "/foo/bar", "/xyz/bar"),
        ("/foo", "/xyz/", "/foo/bar", "/xyz/bar"),
        ("/foo/", "/xyz", "/foo/bar", "/xyz/bar"),
        ("/foo", "/xyz", "/foo", "/xyz"),
        ("/foo", "/xyz", "/foo/", "/xyz/"),
        ("/", "/v2", "/", "/v2/"),
        ("/", "/v2", "/users", "/v2/users"),
    ],
)
def test_prefix_rewrite(
    route_path: str, replacement: str, request_path: str, expected: str
) -> None:
    assert rewritten(request_path, path=route_path, rewrite={"prefix": replacement}) == expected


def test_prefix_rewrite_keeps_the_query() -> None:
    assert rewritten("/api/x", "a=1&b=%2F", path="/api", rewrite={"prefix": "/"}) == "/x?a=1&b=%2F"


def test_regex_rewrite_groups_search_and_normalization() -> None:
    numbered = {"regex": r"^/r/(\w+)/(.*)$", "replacement": r"/\2/\1"}
    assert rewritten("/r/ab/c%2Fd", "q=1", path="/", rewrite=numbered) == "/c%2Fd/ab?q=1"
    named = {"regex": r"^/u/(?P<id>\d+)", "replacement": r"/users/\g<id>"}
    assert rewritten("/u/42/x", path="/", rewrite=named) == "/users/42/x"  # first match only
    assert rewritten("/other", path="/", rewrite=named) == "/other"  # no match: unchanged
    relative = {"regex": r"^/x/(.*)", "replacement": r"\1"}
    assert rewritten("/x/y", path="/", rewrite=relative) == "/y"  # a leading "/" is added
    dots = {"regex": r"^/a/(.*)", "replacement": r"/b/../\1"}
    assert rewritten("/a/c", path="/", rewrite=dots) == "/c"  # normalized again


def test_regex_rewrite_that_breaks_encoding_raises() -> None:
    split = action(path="/", rewrite={"regex": r"^/(%2)F", "replacement": r"/\1"})
    assert isinstance(split, Rewrite)
    with pytest.raises(ValueError, match="percent-encoding"):
        split.target("/%2F", "")


def test_redirect_locations() -> None:
    moved = action(path="/old", redirect={"to": "https://new.example$rest", "status": 301,
                                          "keep_query": True})  # fmt: skip
    assert isinstance(moved, Redirect)
    assert moved.location("a.example:8080", "/old/x", "q=1") == "https://new.example/x?q=1"
    assert moved.location("a.example", "/old", "") == "https://new.example"
    same = action(path="/", redirect={"to": "http://$host$path?from=$$x", "keep_query": True})
    assert isinstance(same, Redirect)
    assert same.location("h:81", "/p", "a=1") == "http://h:81/p?from=$x&a=1"
    assert same.answer("h", "/p", "").status == 302


def test_redirect_of_a_crafted_path_stays_on_the_site() -> None:
    rest = action(path="/p", redirect={"to": "$rest"})
    assert isinstance(rest, Redirect)
    assert rest.location("h", "/p//evil.example", "") == "/evil.example"
    assert rest.location("h", "/p/\\evil.example", "") == "/%5Cevil.example"
    assert rest.location("h", "/p", "") == "/"


def test_routes_table_shows_the_action() -> None:
    config = Config.model_validate({
        "services": {"s": {"instances": []}},
        "routes": [{"path": "/api", "service": "s", "rewrite": {"prefix": "/"}},
                   {"path": "/old", "redirect": {"to": "/new", "status": 308}}],
    })  # fmt: skip
    text = render_table(compile_routes(config.routes, {"s": "s"}))
    assert "(rewrite prefix /api -> /)" in text
    assert "/old  -> (answers itself)  [route-1]  (redirect 308 /new)" in text


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ("{path: /a, service: s, rewrite: {regex: '(a', replacement: /}}",
         (3, 42, "routes[0].rewrite.regex", "invalid regular expression '(a'")),
        ("{path: /a, service: s, rewrite: {regex: '(a)', replacement: '/\\2'}}",
         (3, 60, "routes[0].rewrite.replacement", "invalid replacement")),
        ("{path: /a, service: s, rewrite: {regex: '(?P<a>x)', replacement: '\\g<b>'}}",
         (3, 65, "routes[0].rewrite.replacement", "invalid replacement")),
        ("{path: /a, service: s, rewrite: {regex: a, replacement: '/a b'}}",
         (3, 55, "routes[0].rewrite.replacement", "character ' ' is not allowed")),
        ("{path: /a, service: s, rewrite: {prefix: x}}",
         (3, 42, "routes[0].rewrite.prefix", "a prefix replacement must start with '/'")),
        ("{path: /a, path_type: exact, service: s, rewrite: {prefix: /}}",
         (3, 60, "routes[0].rewrite.prefix", "a prefix rewrite replaces the matched prefix")),
        ("{path: /a, service: s, rewrite: {}}",
         (3, 34, "routes[0].rewrite", "set prefix, regex (with replacement) or host")),
        ("{path: /a, redirect: {to: /b}, service: s}",
         (3, 5, "routes[0]", "set exactly one of service or redirect")),
        ("{path: /a}", (3, 5, "routes[0].service", "Field required")),
        ("{path: /a, redirect: {to: 'ftp://x'}}",
         (3, 27, "routes[0].redirect.to", "expected a path (/...) or an http:// or https:// URL")),
        ("{path: /a, redirect: {to: '/$foo'}}",
         (3, 27, "routes[0].redirect.to", "unknown variable $foo")),
        ("{path: /a, redirect: {to: /b, status: 304}}",
         (3, 39, "routes[0].redirect.status", "Input should be 301, 302, 303, 307 or 308")),
        ("{path: /a, path_type: exact, redirect: {to: '/b$rest'}}",
         (3, 45, "routes[0].redirect.to", "$rest is the path after the matched prefix")),
        ("{path: /a, redirect: {to: /b}, policies: [k]}",
         (3, 42, "routes[0].policies", "a redirect route answers before policies run")),
    ],
)  # fmt: skip
def test_config_errors_name_the_line_and_field(
    issues_in: IssuesIn, route: str, expected: tuple[int, int, str, str]
) -> None:
    issues = issues_in(
        "services: {s: {instances: []}}\n"
        "policies: {k: {api_key: {keys: [{consumer: a, key: '0123456789abcdef'}]}}}\n"
        f"routes:\n  - {route}\n"
    )
    assert len(issues) == 1, [str(i) for i in issues]
    line, _column, field, message = expected
    found_line, _, found_field = where(issues[0])
    assert (found_line, found_field, issues[0].message[: len(message)]) == (
        line + 1,
        field,
        message,
    )
