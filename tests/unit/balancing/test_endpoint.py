"""Endpoint: address formatting, the opaque key, availability and passive back-off."""

from __future__ import annotations

import hashlib
import math
import time

import pytest

from portway.balancing import Endpoint, endpoint_key, endpoints_from_config
from portway.config.model import ServiceConfig


def test_fields_and_defaults() -> None:
    endpoint = Endpoint("10.1.2.3", 8080, weight=3, index=2)
    assert (endpoint.host, endpoint.port) == ("10.1.2.3", 8080)
    assert (endpoint.weight, endpoint.index) == (3, 2)
    assert endpoint.address == "10.1.2.3:8080"
    assert endpoint.active == 0
    assert endpoint.healthy is True
    assert endpoint.down_until == 0.0


def test_ipv6_address_is_bracketed() -> None:
    # RFC 3986 §3.2.2: an IPv6 literal in an authority is enclosed in brackets.
    endpoint = Endpoint("2001:db8::1", 443)
    assert endpoint.address == "[2001:db8::1]:443"
    assert Endpoint.from_address("[2001:db8::1]:443").host == "2001:db8::1"


def test_from_address() -> None:
    endpoint = Endpoint.from_address("backend.internal:9000", weight=5, index=1)
    assert (endpoint.host, endpoint.port, endpoint.weight, endpoint.index) == (
        "backend.internal",
        9000,
        5,
        1,
    )


def test_key_is_a_stable_opaque_digest_of_the_address() -> None:
    endpoint = Endpoint("10.1.2.3", 8080)
    assert endpoint.key == hashlib.sha256(b"10.1.2.3:8080").hexdigest()[:16]
    assert endpoint.key == endpoint_key("10.1.2.3:8080")
    assert len(endpoint.key) == 16 and all(c in "0123456789abcdef" for c in endpoint.key)
    assert "10.1.2.3" not in endpoint.key
    # Same address, same key whatever the weight or position; another port, another key.
    assert Endpoint("10.1.2.3", 8080, weight=9, index=4).key == endpoint.key
    assert Endpoint("10.1.2.3", 8081).key != endpoint.key


def test_available_requires_healthy_and_no_back_off() -> None:
    endpoint = Endpoint("h", 1)
    assert endpoint.available(100.0)
    endpoint.down_until = 150.0
    assert not endpoint.available(149.9)
    assert endpoint.available(150.0)  # the deadline itself is past the back-off
    endpoint.down_until = 0.0
    endpoint.healthy = False
    assert not endpoint.available(100.0)


def test_mark_down_backs_off_from_now() -> None:
    endpoint = Endpoint("h", 1)
    before = time.monotonic()
    endpoint.mark_down(30.0)
    after = time.monotonic()
    assert before + 30.0 <= endpoint.down_until <= after + 30.0
    assert not endpoint.available(after)
    assert endpoint.available(after + 30.0)


def test_mark_down_keeps_the_longer_back_off() -> None:
    endpoint = Endpoint("h", 1)
    endpoint.mark_down(60.0)
    deadline = endpoint.down_until
    endpoint.mark_down(1.0)
    assert endpoint.down_until == deadline


def test_mark_down_zero_leaves_it_available() -> None:
    endpoint = Endpoint("h", 1)
    endpoint.mark_down(0.0)
    assert endpoint.available(time.monotonic())


@pytest.mark.parametrize("seconds", [-1.0, math.nan, math.inf])
def test_mark_down_rejects_bad_durations(seconds: float) -> None:
    with pytest.raises(ValueError, match="back-off"):
        Endpoint("h", 1).mark_down(seconds)


@pytest.mark.parametrize(
    ("host", "port", "weight", "index", "message"),
    [
        ("", 80, 1, 0, "host"),
        ("h", 65536, 1, 0, "port"),
        ("h", -1, 1, 0, "port"),
        ("h", 80, 0, 0, "weight"),
        ("h", 80, 1, -1, "index"),
    ],
)
def test_rejects_bad_fields(host: str, port: int, weight: int, index: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Endpoint(host, port, weight, index)


@pytest.mark.parametrize("address", ["no-port", "::1:80", "h:http", "[::1]80", ":80"])
def test_from_address_rejects_malformed(address: str) -> None:
    with pytest.raises(ValueError):
        Endpoint.from_address(address)


def test_slots_reject_unknown_attributes() -> None:
    endpoint = Endpoint("h", 1)
    with pytest.raises(AttributeError):
        endpoint.colour = "red"  # type: ignore[attr-defined]


def test_endpoints_from_config_index_in_order() -> None:
    service = ServiceConfig(instances=["10.0.0.1:80", {"address": "[2001:db8::2]:81", "weight": 3}])
    endpoints = endpoints_from_config(service)
    assert [(e.address, e.weight, e.index) for e in endpoints] == [
        ("10.0.0.1:80", 1, 0),
        ("[2001:db8::2]:81", 3, 1),
    ]
