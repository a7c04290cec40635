"""End to end over loopback: client -> gateway -> real backends. Forwarding, keep-alive, framing."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator

import pytest

from tests.e2e.gateway import GatewayThread
from tests.support.backends import Backend
from tests.support.client import KeepAliveClient, parse_responses, request, send_raw


def one_service(address: str, **service: object) -> dict[str, object]:
    return {
        "services": {"web": {"instances": [address], **service}},
        "routes": [{"path": "/", "service": "web"}],
    }


@pytest.fixture
def gateway(backend: Backend) -> Iterator[GatewayThread]:
    with GatewayThread(one_service(backend.address)) as g:
        yield g


def test_get_is_forwarded_with_path_query_and_response(
    gateway: GatewayThread, backend: Backend
) -> None:
    response = request(gateway.port, "GET", "/hello/world?x=1&y=2", headers={"X-Custom": "yes"})
    assert response.status == 200
    echo = response.json()
    assert echo["backend"] == "b1"
    assert echo["target"] == "/hello/world?x=1&y=2"
    assert echo["headers"]["x-custom"] == "yes"
    # The client's Host is preserved by default.
    assert echo["headers"]["host"] == "test.local"


def test_post_body_reaches_backend_intact(gateway: GatewayThread, backend: Backend) -> None:
    body = bytes(range(256)) * 100
    response = request(gateway.port, "POST", "/upload", body=body)
    assert response.status == 200
    assert response.json()["body_bytes"] == len(body)
    assert response.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_request_id_generated_and_returned(gateway: GatewayThread, backend: Backend) -> None:
    response = request(gateway.port, "GET", "/")
    rid = response.header("x-request-id")
    assert rid is not None and len(rid) == 32 and int(rid, 16) >= 0
    assert response.json()["headers"]["x-request-id"] == rid


def test_client_request_id_kept_when_plain_replaced_when_hostile(gateway: GatewayThread) -> None:
    kept = request(gateway.port, "GET", "/", headers={"X-Request-Id": "abc-123"})
    assert kept.header("x-request-id") == "abc-123"
    assert kept.json()["headers"]["x-request-id"] == "abc-123"
    hostile = request(gateway.port, "GET", "/", headers={"X-Request-Id": 'a b" <script>'})
    assert hostile.header("x-request-id") != 'a b" <script>'
    assert len(hostile.header("x-request-id") or "") == 32


def test_hop_by_hop_headers_stripped_both_ways(gateway: GatewayThread, backend: Backend) -> None:
    """RFC 9110 §7.6.1: Connection, the fields it names, and the classic hop-by-hop fields."""
    response = request(
        gateway.port,
        "GET",
        "/",
        headers={
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "1",
            "Keep-Alive": "timeout=5",
            "Proxy-Connection": "keep-alive",
            "Upgrade-Insecure-Requests": "1",
            "TE": "trailers",
        },
    )
    seen = response.json()["headers"]
    assert "x-secret-hop" not in seen
    assert "keep-alive" not in seen
    assert "proxy-connection" not in seen
    assert seen.get("connection") is None
    assert seen["upgrade-insecure-requests"] == "1"  # not hop-by-hop, only similar in name
    assert seen["te"] == "trailers"  # we forward trailers, so we may say so


def test_forwarded_headers_set_for_untrusted_client(gateway: GatewayThread) -> None:
    """An untrusted client's X-Forwarded-* and Forwarded are replaced (RFC 7239 §8.1)."""
    response = request(
        gateway.port,
        "GET",
        "/",
        headers={
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil.example",
            "Forwarded": "for=6.6.6.6",
        },
    )
    seen = response.json()["headers"]
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == "test.local"
    assert seen["x-forwarded-port"] == str(gateway.port)
    assert seen["forwarded"] == 'for=127.0.0.1;host="test.local";proto=http'


def test_forwarded_headers_appended_for_trusted_proxy(backend: Backend) -> None:
    config = one_service(backend.address)
    config["server"] = {"trusted_proxies": ["127.0.0.0/8"]}
    with GatewayThread(config) as g:
        response = request(
            g.port,
            "GET",
            "/",
            headers={
                "X-Forwarded-For": "203.0.113.9",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "shop.example",
                "X-Forwarded-Port": "443",
                "Forwarded": "for=203.0.113.9;proto=https",
            },
        )
    seen = response.json()["headers"]
    assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-forwarded-host"] == "shop.example"
    assert seen["x-forwarded-port"] == "443"
    assert (
        seen["forwarded"]
        == 'for=203.0.113.9;proto=https, for=127.0.0.1;host="test.local";proto=http'
    )


def test_rewrite_host_sends_instance_address(backend: Backend) -> None:
    with GatewayThread(one_service(backend.address, rewrite_host=True)) as g:
        seen = request(g.port, "GET", "/").json()["headers"]
    assert seen["host"] == backend.address
    assert seen["x-forwarded-host"] == "test.local"


def test_absolute_form_target_overrides_host(gateway: GatewayThread) -> None:
    """RFC 9112 §3.2.2: the authority of an absolute-form target replaces Host."""
    raw = b"GET http://api.example.com/p?q=1 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n"
    (response,) = parse_responses(send_raw(gateway.port, raw))
    echo = response.json()
    assert echo["target"] == "/p?q=1"
    assert echo["headers"]["host"] == "api.example.com"


def test_keep_alive_downstream_and_upstream_reuse(gateway: GatewayThread, backend: Backend) -> None:
    with KeepAliveClient(gateway.port) as client:
        for i in range(20):
            response = client.request("GET", f"/n/{i}")
            assert response.status == 200
            assert response.json()["target"] == f"/n/{i}"
        assert not client.server_closed(0.1)
    assert backend.connections_accepted == 1  # one upstream connection served all 20


def test_pipelined_requests_answered_in_order(gateway: GatewayThread, backend: Backend) -> None:
    """RFC 9112 §9.3.2: responses to pipelined requests go out in the order received."""
    payload = (
        b"".join(b"GET /p/%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(10))
        + b"GET /slow?delay=0.05 HTTP/1.1\r\nHost: t\r\n\r\nGET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    responses = parse_responses(send_raw(gateway.port, payload))
    targets = [
        r.json()["target"] if r.body.startswith(b"{") else r.body.decode() for r in responses
    ]
    assert targets == [f"/p/{i}" for i in range(10)] + ["slow", "/last"]


def test_connection_close_from_client_is_honoured(gateway: GatewayThread) -> None:
    with KeepAliveClient(gateway.port) as client:
        response = client.request("GET", "/", headers={"Connection": "close"})
        assert response.header("connection") == "close"
        assert client.server_closed(2.0)


def test_http10_client_gets_body_without_chunking(gateway: GatewayThread) -> None:
    raw = b"GET /stream?bytes=1000&chunked=1 HTTP/1.0\r\n\r\n"
    data = send_raw(gateway.port, raw)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()
    assert len(body) == 1000


def test_http10_keep_alive_when_asked(gateway: GatewayThread) -> None:
    with KeepAliveClient(gateway.port) as client:
        client.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        response = client.read_response()
        assert response.status == 200
        assert (response.header("connection") or "").lower() == "keep-alive"
        client.send(b"GET /again HTTP/1.0\r\n\r\n")
        assert client.read_response().json()["target"] == "/again"
        assert client.server_closed(2.0)


def test_chunked_response_with_trailers_is_relayed(gateway: GatewayThread) -> None:
    response = request(gateway.port, "GET", "/trailers", headers={"TE": "trailers"})
    assert response.status == 200
    assert response.body == b"helloworld"
    assert response.header("transfer-encoding") == "chunked"
    assert response.trailer("x-checksum") == "abc"
    assert response.trailer("x-count") == "2"


def test_chunked_request_with_trailers_is_relayed(gateway: GatewayThread, backend: Backend) -> None:
    raw = (
        b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n"
    )
    (response,) = parse_responses(send_raw(gateway.port, raw))
    assert response.json()["body_bytes"] == 11
    assert response.json()["body_sha256"] == hashlib.sha256(b"hello world").hexdigest()
    (received,) = backend.wait_for_requests(1)
    assert received.header("transfer-encoding") == "chunked"
    assert received.trailers == [(b"X-Sum", b"42")]


def test_until_close_response_is_rechunked_for_http11(gateway: GatewayThread) -> None:
    """RFC 9112 §6.3 rule 8: a body ended by close becomes chunked so the client connection lives."""
    with KeepAliveClient(gateway.port) as client:
        response = client.request("GET", "/until-close")
        assert response.body == b"streamed until close"
        assert response.header("transfer-encoding") == "chunked"
        assert client.request("GET", "/after").status == 200


def test_head_request_gets_headers_without_body(gateway: GatewayThread) -> None:
    with KeepAliveClient(gateway.port) as client:
        response = client.request("HEAD", "/stream?bytes=5000")
        assert response.status == 200
        assert response.header("content-length") == "5000"
        assert response.body == b""
        assert client.request("GET", "/after-head").json()["target"] == "/after-head"


def test_status_codes_and_no_body_statuses_pass_through(gateway: GatewayThread) -> None:
    with KeepAliveClient(gateway.port) as client:
        assert client.request("GET", "/status/418").status == 418
        not_modified = client.request("GET", "/status/304")
        assert not_modified.status == 304 and not_modified.body == b""
        no_content = client.request("GET", "/status/204")
        assert no_content.status == 204 and no_content.body == b""
        assert client.request("GET", "/status/201").status == 201


def test_expect_100_continue_is_relayed(gateway: GatewayThread) -> None:
    with KeepAliveClient(gateway.port) as client:
        client.send(
            b"POST /continue HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n",
            "POST",
        )
        interim = client.read_interim()
        assert interim.status == 100
        client.sock.sendall(b"hello")
        response = client.read_response()
        assert response.status == 200
        assert response.json()["body_bytes"] == 5


def test_large_download_streams_intact(gateway: GatewayThread) -> None:
    from tests.support.client import stream_download

    for chunked in (0, 1):
        head, count, digest = stream_download(
            gateway.port, f"/stream?bytes={8 << 20}&chunked={chunked}"
        )
        assert head.status == 200
        assert count == 8 << 20
        from tests.support.pattern import pattern_sha256

        assert digest == pattern_sha256(8 << 20)


def test_client_disconnect_mid_response_frees_upstream(
    gateway: GatewayThread, backend: Backend
) -> None:
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.sendall(b"GET /stream?bytes=50000000 HTTP/1.1\r\nHost: t\r\n\r\n")
    sock.recv(1000)
    sock.close()
    # The gateway must close that upstream connection (its response was cut) and keep serving.
    assert request(gateway.port, "GET", "/ok").status == 200
