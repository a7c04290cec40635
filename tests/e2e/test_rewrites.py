"""Rewrites and redirects through a real gateway and backend: what the backend receives, what the
client is answered, and that both are counted under their route."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.gateway import GatewayThread
from tests.support.backends import Backend
from tests.support.client import request


@pytest.fixture
def gateway(backend: Backend) -> Iterator[GatewayThread]:
    config = {
        "services": {"web": {"instances": [backend.address]}},
        "routes": [
            {"name": "api", "path": "/api", "service": "web",
             "rewrite": {"prefix": "/", "host": "internal.example"}},
            {"name": "users", "path": "/u/[0-9]+", "path_type": "regex", "service": "web",
             "rewrite": {"regex": r"^/u/(?P<id>[0-9]+)$", "replacement": r"/users/\g<id>"}},
            {"name": "moved", "path": "/old", "redirect": {"to": "/new$rest", "status": 301,
                                                           "keep_query": True}},
            {"name": "away", "path": "/away", "path_type": "exact",
             "redirect": {"to": "https://$host/elsewhere"}},
            {"name": "rest", "path": "/", "service": "web"},
        ],
    }  # fmt: skip
    with GatewayThread(config) as g:
        yield g


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/api", "/"),
        ("/api/", "/"),
        ("/api/x/y?a=1&b=%2F", "/x/y?a=1&b=%2F"),
        ("/api/a%2Fb", "/a%2Fb"),
        ("/apix", "/apix"),  # not under the prefix: another route, unchanged
        ("/u/42?v=1", "/users/42?v=1"),
    ],
)
def test_rewritten_target_reaches_the_backend(
    gateway: GatewayThread, target: str, expected: str
) -> None:
    response = request(gateway.port, "GET", target)
    assert response.status == 200
    assert response.json()["target"] == expected


def test_host_rewrite_keeps_the_original_in_x_forwarded_host(gateway: GatewayThread) -> None:
    headers = request(gateway.port, "GET", "/api/x").json()["headers"]
    assert headers["host"] == "internal.example"
    assert headers["x-forwarded-host"] == "test.local"
    assert request(gateway.port, "GET", "/other").json()["headers"]["host"] == "test.local"


def test_redirect_status_location_and_query(gateway: GatewayThread) -> None:
    response = request(gateway.port, "GET", "/old/page?x=1")
    assert response.status == 301
    assert response.header("location") == "/new/page?x=1"
    away = request(gateway.port, "GET", "/away?dropped=1", host="a.example:8080")
    assert away.status == 302
    assert away.header("location") == "https://a.example:8080/elsewhere"


def test_redirect_answers_head_without_a_body(gateway: GatewayThread) -> None:
    response = request(gateway.port, "HEAD", "/old")
    assert response.status == 301
    assert response.header("location") == "/new"
    assert response.body == b""


def test_redirects_are_counted_under_their_route(gateway: GatewayThread) -> None:
    request(gateway.port, "GET", "/old")
    request(gateway.port, "HEAD", "/old")
    snapshot = gateway.call(gateway.gateway.ctx.stats.snapshot)
    requests = {tuple(row[:4]): row[4] for row in snapshot["requests"]}
    assert requests[("moved", "", "GET", "3xx")] == 1
    assert requests[("moved", "", "HEAD", "3xx")] == 1
