"""The ``cors`` policy through a real gateway and backends (the Fetch standard's CORS protocol,
https://fetch.spec.whatwg.org/#http-cors-protocol).

Preflights (Fetch §3.2.2, §4.8) are answered by the gateway and never reach a backend; an allowed
actual request gets the CORS response headers (§3.2.3) and the gateway's win over the upstream's;
a preflight, which carries no credentials, passes a route's authentication, and a refusal by
authentication still carries the CORS headers a browser needs to show it to the page.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.gateway import GatewayThread
from tests.support.backends import Backend, refused_port
from tests.support.client import KeepAliveClient, recv_head, request

APP = "https://app.example.com"
KEY = "alice-0123456789abcdef"
PREFLIGHT = {"Origin": APP, "Access-Control-Request-Method": "PUT"}


class CorsSettingUpstream:
    """An upstream that answers every request with its own, wide-open CORS headers (what many
    frameworks do by default), then closes the connection."""

    ANSWER = (
        b"HTTP/1.1 200 OK\r\n"
        b"Access-Control-Allow-Origin: *\r\n"
        b"access-control-allow-credentials: true\r\n"
        b"Access-Control-Expose-Headers: x-secret\r\n"
        b"Vary: Accept-Encoding\r\n"
        b"Content-Length: 2\r\n"
        b"Connection: close\r\n\r\nok"
    )

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    recv_head(conn)
                except EOFError:
                    continue
                conn.sendall(self.ANSWER)

    def close(self) -> None:
        self.sock.close()


def config(api: str, wide_open: str, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "services": {"api": {"instances": [api]}, "wide": {"instances": [wide_open]}},
        "policies": {
            "browsers": {
                "cors": {
                    "allow_origins": [APP, "https://*.partner.example"],
                    "allow_methods": ["GET", "PUT"],
                    "allow_headers": ["x-api-key", "content-type"],
                    "expose_headers": ["x-total"],
                    "allow_credentials": True,
                    "max_age": "10m",
                }
            },
            "keys": {"api_key": {"keys": [{"consumer": "alice", "key": KEY}]}},
        },
        "routes": [
            # Listed after the API key: CORS still runs first (registry.PHASES).
            {
                "name": "private",
                "path": "/private",
                "service": "api",
                "policies": ["keys", "browsers"],
            },
            {"name": "wide", "path": "/wide", "service": "wide", "policies": ["browsers"]},
            {"name": "public", "path": "/", "service": "api", "policies": ["browsers"]},
        ],
    }
    base.update(overrides)
    return base


@pytest.fixture
def upstream() -> Iterator[CorsSettingUpstream]:
    server = CorsSettingUpstream()
    yield server
    server.close()


@pytest.fixture
def gateway(backend: Backend, upstream: CorsSettingUpstream) -> Iterator[GatewayThread]:
    with GatewayThread(config(backend.address, upstream.address)) as g:
        yield g


def test_a_preflight_is_answered_by_the_gateway_and_never_reaches_the_backend(
    gateway: GatewayThread, backend: Backend
) -> None:
    with KeepAliveClient(gateway.port) as client:
        answer = client.request(
            "OPTIONS",
            "/items/1",
            headers={**PREFLIGHT, "Access-Control-Request-Headers": "content-type"},
        )
        assert answer.status == 204
        assert answer.header("access-control-allow-origin") == APP
        assert answer.header("access-control-allow-methods") == "GET, PUT"
        assert answer.header("access-control-allow-headers") == "x-api-key, content-type"
        assert answer.header("access-control-allow-credentials") == "true"
        assert answer.header("access-control-max-age") == "600"
        assert "origin" in (answer.header("vary") or "")
        # RFC 9110 §15.3.5 and §8.6: a 204 has no content and no Content-Length.
        assert answer.body == b""
        assert answer.header("content-length") is None
        assert answer.header("portway-error") is None
        # The connection stays usable: the next request is framed right after the 204.
        after = client.request("GET", "/items/1", headers={"Origin": APP})
        assert after.status == 200
    assert [r.method for r in backend.requests] == ["GET"]
    assert gateway.policy_rejections() == {}  # a 204 is an answer, not a refusal


def test_an_allowed_actual_request_gets_the_cors_headers_and_reaches_the_backend(
    gateway: GatewayThread,
) -> None:
    response = request(
        gateway.port, "PUT", "/items/1", headers={"Origin": "https://eu.partner.example"}
    )
    assert response.status == 200
    assert response.json()["headers"]["origin"] == "https://eu.partner.example"  # forwarded as is
    assert response.header("access-control-allow-origin") == "https://eu.partner.example"
    assert response.header("access-control-allow-credentials") == "true"
    assert response.header("access-control-expose-headers") == "x-total"
    assert response.header("vary") == "origin"


def test_a_disallowed_origin_is_served_without_cors_headers(gateway: GatewayThread) -> None:
    response = request(gateway.port, "GET", "/items", headers={"Origin": "https://evil.example"})
    assert response.status == 200  # the browser, not the gateway, withholds the answer
    assert response.header("access-control-allow-origin") is None
    assert response.header("vary") == "origin"


def test_the_upstreams_own_cors_headers_are_replaced_by_the_gateways(
    gateway: GatewayThread,
) -> None:
    allowed = request(gateway.port, "GET", "/wide", headers={"Origin": APP})
    assert allowed.status == 200 and allowed.body == b"ok"
    assert allowed.header_values("access-control-allow-origin") == [APP]
    assert allowed.header_values("access-control-allow-credentials") == ["true"]
    assert allowed.header_values("access-control-expose-headers") == ["x-total"]
    assert allowed.header_values("vary") == ["Accept-Encoding", "origin"]  # Vary is a list
    # The upstream's "*" cannot widen the allow-list.
    denied = request(gateway.port, "GET", "/wide", headers={"Origin": "https://evil.example"})
    assert denied.status == 200
    assert denied.header("access-control-allow-origin") is None
    assert denied.header("access-control-allow-credentials") is None
    assert denied.header("access-control-expose-headers") is None


def test_a_preflight_passes_authentication_and_a_401_carries_the_cors_headers(
    gateway: GatewayThread,
) -> None:
    # Fetch §4.8: a CORS-preflight request never carries credentials.
    preflight = request(
        gateway.port,
        "OPTIONS",
        "/private/x",
        headers={**PREFLIGHT, "Access-Control-Request-Headers": "x-api-key"},
    )
    assert preflight.status == 204
    missing = request(gateway.port, "PUT", "/private/x", headers={"Origin": APP})
    assert missing.status == 401
    assert missing.header("portway-error") == "missing_credentials"
    # Without these the page would see a network error instead of the 401.
    assert missing.header("access-control-allow-origin") == APP
    assert missing.header("access-control-allow-credentials") == "true"
    ok = request(gateway.port, "PUT", "/private/x", headers={"Origin": APP, "x-api-key": KEY})
    assert ok.status == 200
    assert ok.json()["headers"]["x-portway-consumer"] == "alice"
    assert ok.header("access-control-allow-origin") == APP
    assert gateway.policy_rejections() == {("private", "keys", "api_key", "missing_credentials"): 1}


def test_refused_preflights_are_403_and_counted_as_cors_refused(
    gateway: GatewayThread, backend: Backend
) -> None:
    evil = request(
        gateway.port, "OPTIONS", "/x", headers={**PREFLIGHT, "Origin": "https://evil.example"}
    )
    assert evil.status == 403
    assert evil.header("portway-error") == "cors_refused"
    assert evil.header("access-control-allow-origin") is None
    assert b"origin 'https://evil.example' is not allowed" in evil.body
    method = request(
        gateway.port,
        "OPTIONS",
        "/x",
        headers={**PREFLIGHT, "Access-Control-Request-Method": "DELETE"},
    )
    assert method.status == 403
    header = request(
        gateway.port,
        "OPTIONS",
        "/private/x",
        headers={**PREFLIGHT, "Access-Control-Request-Headers": "x-debug"},
    )
    assert header.status == 403
    assert backend.requests == []
    assert gateway.policy_rejections() == {
        ("public", "browsers", "cors", "cors_refused"): 2,
        ("private", "browsers", "cors", "cors_refused"): 1,
    }


def test_options_without_a_request_method_is_forwarded(
    gateway: GatewayThread, backend: Backend
) -> None:
    response = request(gateway.port, "OPTIONS", "/x", headers={"Origin": APP})
    assert response.status == 200
    assert response.header("access-control-allow-origin") == APP
    assert [r.method for r in backend.requests] == ["OPTIONS"]


def test_cors_refusals_show_in_the_prometheus_metrics(
    backend: Backend, upstream: CorsSettingUpstream
) -> None:
    from tests.support.admin import admin_get, metric_value, wait_until

    with GatewayThread(config(backend.address, upstream.address), admin=True) as g:
        denied = {**PREFLIGHT, "Origin": "null"}  # an opaque origin: never listed, never allowed
        assert request(g.port, "OPTIONS", "/x", headers=denied).status == 403
        assert request(g.port, "OPTIONS", "/x", headers=PREFLIGHT).status == 204

        def refused() -> float | None:
            text = admin_get(g.admin_port, "/metrics").text
            return metric_value(
                text,
                "portway_policy_rejections_total",
                route="public",
                policy="browsers",
                kind="cors",
                reason="cors_refused",
            )

        assert wait_until(refused) == 1.0


def test_the_gateways_own_502_carries_the_cors_headers_and_no_sticky_cookie(
    backend: Backend, upstream: CorsSettingUpstream
) -> None:
    """A page must be able to read the gateway's 502 (Fetch §3.2.3: without
    Access-Control-Allow-Origin a browser hands the page a network error instead). A sticky
    session's cookie is not set by it: it would name the instance that did not answer."""
    down = f"127.0.0.1:{refused_port()}"
    settings = config(backend.address, upstream.address)
    settings["services"]["down"] = {"instances": [down], "sticky": {"cookie": "pin"}}
    settings["routes"].insert(0, {"path": "/down", "service": "down", "policies": ["browsers"]})
    with GatewayThread(settings) as g:
        failed = request(g.port, "GET", "/down/x", headers={"Origin": APP})
        assert failed.status == 502
        assert failed.header("portway-error") is not None
        assert failed.header("access-control-allow-origin") == APP
        assert failed.header("access-control-allow-credentials") == "true"
        assert failed.header("access-control-expose-headers") == "x-total"
        assert failed.header("vary") == "origin"
        assert failed.header("set-cookie") is None
        assert b"502 Bad Gateway" in failed.body
        # Not a CORS request: the Vary the policy always adds, nothing else.
        plain = request(g.port, "GET", "/down/x")
        assert plain.status == 502
        assert plain.header("vary") == "origin"
        assert plain.header("access-control-allow-origin") is None
