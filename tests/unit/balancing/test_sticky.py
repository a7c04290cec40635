"""Sticky sessions through a Portway cookie (RFC 6265 §4.1: Set-Cookie syntax and attributes)."""

from __future__ import annotations

from typing import Any

import pytest

from portway.balancing import Balancer, Endpoint, RoundRobinBalancer, StickyBalancer
from portway.config.model import StickyConfig
from portway.messages import Request
from tests.unit.balancing.support import NOW, count_picks, make_endpoints, make_request


def sticky(*weights: int, **config: Any) -> StickyBalancer:
    return StickyBalancer(RoundRobinBalancer(make_endpoints(*weights)), StickyConfig(**config))


def set_cookies(request: Request) -> list[bytes]:
    return [value for name, value in request.response_headers if name == b"set-cookie"]


def with_cookie(value: str, name: str = "portway_sticky") -> Request:
    return make_request(headers=[("Cookie", f"theme=dark; {name}={value}")])


def pick(balancer: Balancer, request: Request, exclude: tuple[Endpoint, ...] = ()) -> Endpoint:
    endpoint = balancer.pick_at(request, exclude, NOW)
    assert endpoint is not None
    return endpoint


def test_first_request_gets_a_cookie_naming_the_picked_endpoint() -> None:
    balancer = sticky(1, 1, 1)
    request = make_request()
    endpoint = pick(balancer, request)
    assert set_cookies(request) == [
        f"portway_sticky={endpoint.key}; Path=/; HttpOnly; SameSite=Lax".encode()
    ]
    assert endpoint.address.encode() not in set_cookies(request)[0]


def test_request_with_the_cookie_always_lands_on_its_endpoint() -> None:
    balancer = sticky(1, 1, 1)
    target = balancer.endpoints[2]
    for _ in range(30):
        request = with_cookie(target.key)
        assert pick(balancer, request) is target
        assert request.response_headers == []  # nothing to re-set


def test_quoted_cookie_value_is_accepted() -> None:
    balancer = sticky(1, 1)
    target = balancer.endpoints[1]
    assert all(pick(balancer, with_cookie(f'"{target.key}"')) is target for _ in range(5))


def test_unknown_cookie_value_is_repicked_and_reset() -> None:
    balancer = sticky(1, 1)
    request = with_cookie("0123456789abcdef")
    endpoint = pick(balancer, request)
    assert set_cookies(request)[0].startswith(f"portway_sticky={endpoint.key};".encode())


@pytest.mark.parametrize("make_unavailable", ["unhealthy", "backing_off"])
def test_cookie_naming_an_unavailable_endpoint_is_repicked(make_unavailable: str) -> None:
    balancer = sticky(1, 1, 1)
    gone = balancer.endpoints[0]
    if make_unavailable == "unhealthy":
        gone.healthy = False
    else:
        gone.down_until = NOW + 30.0
    for _ in range(6):
        request = with_cookie(gone.key)
        endpoint = pick(balancer, request)
        assert endpoint is not gone
        assert set_cookies(request) == [
            f"portway_sticky={endpoint.key}; Path=/; HttpOnly; SameSite=Lax".encode()
        ]


def test_retry_replaces_the_cookie_instead_of_adding_one() -> None:
    balancer = sticky(1, 1, 1)
    request = make_request()
    request.response_headers.append((b"set-cookie", b"theme=dark; Path=/"))
    first = pick(balancer, request)
    second = pick(balancer, request, exclude=(first,))
    assert second is not first
    assert set_cookies(request) == [
        b"theme=dark; Path=/",
        f"portway_sticky={second.key}; Path=/; HttpOnly; SameSite=Lax".encode(),
    ]


def test_retry_away_from_the_cookie_endpoint_sets_the_new_one() -> None:
    balancer = sticky(1, 1)
    target = balancer.endpoints[0]
    request = with_cookie(target.key)
    assert pick(balancer, request) is target
    retried = pick(balancer, request, exclude=(target,))
    assert retried is balancer.endpoints[1]
    assert set_cookies(request)[0].startswith(f"portway_sticky={retried.key};".encode())


def test_requests_without_cookie_follow_the_inner_balancer() -> None:
    balancer = sticky(1, 3)
    assert count_picks(balancer, 400) == [100, 300]


def test_no_candidate_sets_no_cookie() -> None:
    balancer = sticky(1)
    balancer.endpoints[0].healthy = False
    request = with_cookie(balancer.endpoints[0].key)
    assert balancer.pick_at(request, (), NOW) is None
    assert request.response_headers == []


@pytest.mark.parametrize(
    ("config", "expected_attributes"),
    [
        ({"max_age": "1h"}, "; Path=/; HttpOnly; Max-Age=3600; SameSite=Lax"),
        ({"max_age": "500ms"}, "; Path=/; HttpOnly; Max-Age=1; SameSite=Lax"),  # whole seconds
        ({"secure": True}, "; Path=/; HttpOnly; Secure; SameSite=Lax"),
        ({"http_only": False}, "; Path=/; SameSite=Lax"),
        (
            {"cookie": "route", "path": "/app", "max_age": 90, "secure": True},
            "; Path=/app; HttpOnly; Max-Age=90; Secure; SameSite=Lax",
        ),
    ],
)
def test_cookie_attributes_follow_the_config(
    config: dict[str, Any], expected_attributes: str
) -> None:
    balancer = sticky(1, **config)
    request = make_request()
    endpoint = pick(balancer, request)
    name = config.get("cookie", "portway_sticky")
    assert set_cookies(request) == [f"{name}={endpoint.key}{expected_attributes}".encode()]


def test_custom_cookie_name_is_read_back() -> None:
    balancer = sticky(1, 1, cookie="route")
    target = balancer.endpoints[1]
    assert pick(balancer, with_cookie(target.key, name="route")) is target
    # The default name is not consulted.
    request = with_cookie(balancer.endpoints[0].key)
    pick(balancer, request)
    assert set_cookies(request)[0].startswith(b"route=")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"cookie": "bad name"}, "cookie name"),
        ({"cookie": "a;b"}, "cookie name"),
        ({"cookie": "a=b"}, "cookie name"),
        ({"cookie": "na\u00efve"}, "cookie name"),
        ({"path": "/a;Domain=evil.example"}, "cookie path"),
        ({"path": "relative"}, "cookie path"),
        ({"path": "/a\nb"}, "cookie path"),
    ],
)
def test_rejects_cookie_settings_that_would_break_the_header(
    config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        sticky(1, **config)
