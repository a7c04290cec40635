"""End to end over loopback: malformed, ambiguous and unsupported requests; routing errors; paths.

Every protocol error is answered once, with an exact status, a ``portway-error`` cause,
``connection: close`` and a body naming the reason and the request id; then the connection is
closed and nothing of the request has reached the backend.
"""

from __future__ import annotations

import select
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.gateway import GatewayThread
from tests.e2e.protocol_errors import assert_error
from tests.support.backends import Backend
from tests.support.client import (
    KeepAliveClient,
    Response,
    connect,
    parse_responses,
    recv_head,
    send_raw,
)


def one_service(address: str, **route: Any) -> dict[str, Any]:
    return {
        "services": {"web": {"instances": [address]}},
        "routes": [{"path": "/", "service": "web", **route}],
    }


@pytest.fixture
def gateway(backend: Backend) -> Iterator[GatewayThread]:
    with GatewayThread(one_service(backend.address)) as g:
        yield g


def answer_and_close(port: int, raw: bytes, method: str = "GET") -> Response:
    """Send ``raw`` on a fresh connection; its one answer, after checking the gateway then closes."""
    with KeepAliveClient(port, timeout=3.0) as client:
        client.send(raw, method)
        response = client.read_response()
        assert client.server_closed(2.0), "the connection stayed open after a protocol error"
    return response


def answer_and_keep_open(port: int, raw: bytes, method: str = "GET") -> Response:
    with KeepAliveClient(port, timeout=3.0) as client:
        client.send(raw, method)
        response = client.read_response()
        assert not client.server_closed(0.05)
        assert client.request("GET", "/after").status == 200  # still usable
    return response


# ---------------------------------------------------------------------------- message framing

FRAMING_CASES = [
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        "Transfer-Encoding can't be present with Content-Length",
        id="content-length-and-transfer-encoding",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
        b"0\r\n\r\n",
        "Content-Length can't be present with Transfer-Encoding",
        id="transfer-encoding-and-content-length",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        "Duplicate Content-Length",
        id="duplicate-content-length-same",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "Duplicate Content-Length",
        id="duplicate-content-length-differing",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nhello!",
        "Content-Length",
        id="content-length-list",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
        "Invalid character in Content-Length",
        id="content-length-not-numeric",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
        "Invalid character in Content-Length",
        id="content-length-negative",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "Content-Length overflow",
        id="content-length-overflow",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        "chunk size",
        id="bad-chunk-size",
    ),
]


@pytest.mark.parametrize(("raw", "reason"), FRAMING_CASES)
def test_ambiguous_or_invalid_framing_is_400(
    gateway: GatewayThread, backend: Backend, raw: bytes, reason: str
) -> None:
    """RFC 9112 §6.3 (rules 3-5), §11.2 (request smuggling), §7.1 (chunk-size), RFC 9110 §8.6:
    a body length that is ambiguous or invalid is an unrecoverable framing error: 400, close."""
    assert_error(answer_and_close(gateway.port, raw, "POST"), 400, reason)
    assert backend.requests == []


# ---------------------------------------------------------------------------- header syntax

HEADER_SYNTAX_CASES = [
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: t\r\nX-A: b\r\n c\r\n\r\n",
        "whitespace",
        id="obs-fold",
    ),
    pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: b\rc\r\n\r\n", "LF", id="cr-in-value"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: b\nX-B: c\r\n\r\n", "CR", id="lf-in-value"),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: t\r\nX-A: b\x00c\r\n\r\n", "header value", id="nul-in-value"
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: t\r\nX-A : b\r\n\r\n", "header token", id="space-before-colon"
    ),
]


@pytest.mark.parametrize(("raw", "reason"), HEADER_SYNTAX_CASES)
def test_invalid_header_syntax_is_400(
    gateway: GatewayThread, backend: Backend, raw: bytes, reason: str
) -> None:
    """RFC 9112 §5.1 (no whitespace before the colon: MUST 400), §5.2 (obs-fold outside
    message/http: MUST reject or replace), RFC 9110 §5.5 (CR, LF, NUL in a field value are
    invalid and MUST be rejected or replaced): the gateway rejects with 400 and closes."""
    assert_error(answer_and_close(gateway.port, raw), 400, reason)
    assert backend.requests == []


# ---------------------------------------------------------------------------- Host


def test_missing_host_in_http11_is_400(gateway: GatewayThread, backend: Backend) -> None:
    """RFC 9112 §3.2: a server MUST respond 400 to an HTTP/1.1 request that lacks Host."""
    response = answer_and_close(gateway.port, b"GET / HTTP/1.1\r\n\r\n")
    assert_error(response, 400, "missing Host header field")
    assert backend.requests == []


def test_two_host_fields_are_400(gateway: GatewayThread, backend: Backend) -> None:
    """RFC 9112 §3.2: a server MUST respond 400 to a request with more than one Host field."""
    response = answer_and_close(gateway.port, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert_error(response, 400, "more than one Host header field")
    assert backend.requests == []


@pytest.mark.parametrize("host", ["a b", "exa mple.com", "host:80:extra", "host:port", "user@host"])
def test_invalid_host_value_is_400(gateway: GatewayThread, backend: Backend, host: str) -> None:
    """RFC 9112 §3.2, RFC 9110 §7.2 and §4.2.4: Host is uri-host [":" port] without userinfo; a
    server MUST respond 400 to a Host field with an invalid value."""
    raw = b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode()
    assert_error(answer_and_close(gateway.port, raw), 400, "invalid Host header field")
    assert backend.requests == []


def test_http10_without_host_is_accepted(gateway: GatewayThread, backend: Backend) -> None:
    """RFC 9112 §3.2: Host is required from HTTP/1.1 on; an HTTP/1.0 request without it is served
    (and, not asking for keep-alive, its connection closes after the answer, §9.3)."""
    response = answer_and_close(gateway.port, b"GET /old HTTP/1.0\r\n\r\n")
    assert response.status == 200
    assert response.json()["target"] == "/old"
    (received,) = backend.wait_for_requests(1)
    assert received.target == b"/old"


# ---------------------------------------------------------------------------- request line


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b"GET / HTTP/1.1\nHost: t\r\n\r\n", "CRLF", id="bare-lf-request-line"),
        pytest.param(
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
            "malformed request",
            id="tls-client-hello",
        ),
        pytest.param(b"HELLO\r\n\r\n", "malformed request", id="garbage-line"),
        pytest.param(b"GET / HTTP/1.2\r\nHost: t\r\n\r\n", "HTTP version", id="http-1.2"),
    ],
)
def test_malformed_request_line_is_400(
    gateway: GatewayThread, backend: Backend, raw: bytes, reason: str
) -> None:
    """RFC 9112 §3 and §2.2: a request-line that is not method SP request-target SP HTTP-version
    CRLF is invalid; the gateway answers 400 and closes (a bare LF line end is not accepted at a
    hop that must frame requests exactly like its upstreams, §11.2)."""
    assert_error(answer_and_close(gateway.port, raw), 400, reason)
    assert backend.requests == []


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        pytest.param(b"example.com/x", "url", id="no-scheme-no-slash"),
        pytest.param(b"example.com:80", "url", id="authority-form-with-get"),
        pytest.param(b"*", "only valid with OPTIONS", id="asterisk-form-with-get"),
        pytest.param(b"ftp://example.com/x", "request-target", id="absolute-form-not-http"),
        pytest.param(b"http://user@example.com/x", "userinfo", id="absolute-form-with-userinfo"),
    ],
)
def test_request_target_of_wrong_form_is_400(
    gateway: GatewayThread, backend: Backend, target: bytes, reason: str
) -> None:
    """RFC 9112 §3.2: a GET's request-target is origin-form or absolute-form; authority-form is
    for CONNECT only, asterisk-form for OPTIONS only; RFC 9110 §4.2.4 forbids userinfo."""
    raw = b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % target
    assert_error(answer_and_close(gateway.port, raw), 400, reason)
    assert backend.requests == []


@pytest.mark.parametrize("path", ["/a%zz", "/a%4", "/a%%41"])
def test_invalid_percent_encoding_in_path_is_400(
    gateway: GatewayThread, backend: Backend, path: str
) -> None:
    """RFC 3986 §2.1 and RFC 9110 §4.1: pct-encoded is "%" HEXDIG HEXDIG; a path that is not a
    valid URI path is a bad request."""
    raw = b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode()
    assert_error(answer_and_close(gateway.port, raw), 400, "invalid percent-encoding")
    assert backend.requests == []


# ---------------------------------------------------------------------------- unsupported


@pytest.mark.parametrize("coding", ["gzip, chunked", "deflate,chunked"])
def test_transfer_coding_other_than_chunked_is_501(
    gateway: GatewayThread, backend: Backend, coding: str
) -> None:
    """RFC 9112 §6.1: a server that receives a transfer coding it does not understand SHOULD
    respond 501 and then close the connection (here chunked is final, so framing is known)."""
    raw = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: %s\r\n\r\n0\r\n\r\n" % coding.encode()
    response = answer_and_close(gateway.port, raw, "POST")
    assert_error(response, 501, "transfer coding")
    assert backend.requests == []


@pytest.mark.parametrize("coding", ["gzip", "chunked, gzip", "identity"])
def test_transfer_encoding_without_final_chunked_is_400(
    gateway: GatewayThread, backend: Backend, coding: str
) -> None:
    """RFC 9112 §6.3 rule 4: Transfer-Encoding in a request whose final coding is not chunked
    leaves the body length undeterminable; the server MUST respond 400 and close."""
    raw = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: %s\r\n\r\n0\r\n\r\n" % coding.encode()
    response = answer_and_close(gateway.port, raw, "POST")
    assert_error(response, 400, "Transfer-Encoding")
    assert backend.requests == []


def test_http2_request_line_is_505(gateway: GatewayThread, backend: Backend) -> None:
    """RFC 9110 §15.6.6: 505 when the server does not support the major version of the request."""
    response = answer_and_close(gateway.port, b"GET / HTTP/2.0\r\nHost: t\r\n\r\n")
    assert_error(response, 505, "HTTP/2.0 is not supported")
    assert backend.requests == []


def test_connect_is_405_with_allow(gateway: GatewayThread, backend: Backend) -> None:
    """RFC 9110 §9.3.6 (CONNECT is for proxies, a reverse proxy refuses it) and §15.5.6: a 405
    response MUST carry an Allow header field listing the methods that are supported."""
    raw = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    response = answer_and_close(gateway.port, raw, "CONNECT")
    assert_error(response, 405, "CONNECT is not supported")
    assert backend.requests == []
    allow = response.header("allow")
    assert allow is not None, "405 without Allow (RFC 9110 §15.5.6)"
    assert "CONNECT" not in allow.upper()


def test_h2c_upgrade_is_501_and_not_forwarded(gateway: GatewayThread, backend: Backend) -> None:
    """RFC 9110 §7.8 and §15.6.2: only WebSocket upgrades (RFC 6455 §4.1) are tunnelled
    (tests/e2e/test_websocket.py); an h2c upgrade (RFC 7540 §3.2) is answered 501. That must be
    the one and only answer to the request: it is not forwarded upstream as well (RFC 9112 §9.3:
    one response per request)."""
    raw = (
        b"GET /chat HTTP/1.1\r\nHost: t\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    )
    responses = parse_responses(send_raw(gateway.port, raw, timeout=3.0))
    assert [r.status for r in responses] == [501], [(r.status, r.body[:80]) for r in responses]
    assert_error(responses[0], 501, "only WebSocket upgrades are supported")
    assert backend.requests == []


# ---------------------------------------------------------------------------- pipelining


def test_error_after_pipelined_good_requests_comes_last_in_order(
    gateway: GatewayThread, backend: Backend
) -> None:
    """RFC 9112 §9.3.2: responses to pipelined requests go out in request order; a malformed
    request after two good ones is answered after theirs, then the connection closes."""
    raw = (
        b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /2 HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /3 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
        b"GET /never HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    responses = parse_responses(send_raw(gateway.port, raw, timeout=3.0))
    assert [r.status for r in responses] == [200, 200, 400]
    assert [r.json()["target"] for r in responses[:2]] == ["/1", "/2"]
    assert_error(responses[2], 400, "more than one Host header field")
    assert [r.target for r in backend.requests] == [b"/1", b"/2"]


# ---------------------------------------------------------------------------- routing errors


@pytest.fixture
def host_routed(backend: Backend) -> Iterator[GatewayThread]:
    with GatewayThread(one_service(backend.address, hosts=["app.example"])) as g:
        yield g


def assert_no_route(response: Response, request_id: str | None = None) -> None:
    assert response.status == 404
    assert response.header("portway-error") == "no_route"
    rid = response.header("x-request-id")
    assert rid
    if request_id is not None:
        assert rid == request_id


def test_no_route_is_404_with_cause_and_request_id(
    host_routed: GatewayThread, backend: Backend
) -> None:
    """RFC 9110 §15.5.5: no route for the host and path is 404; a routing miss is not a protocol
    error, so the connection stays open (RFC 9112 §9.3)."""
    with KeepAliveClient(host_routed.port, host="other.example") as client:
        response = client.request("GET", "/x", headers={"X-Request-Id": "req-404"})
        assert_no_route(response, "req-404")
        body = response.body.decode()
        assert body.startswith("404 ")
        assert "no route matches this host and path" in body
        assert "request id: req-404" in body
        assert response.header("connection") is None
        assert not client.server_closed(0.05)
        second = client.request("GET", "/y")
        assert_no_route(second)
        assert f"request id: {second.header('x-request-id')}" in second.body.decode()
    assert backend.requests == []


def test_head_with_no_route_is_404_without_body(
    host_routed: GatewayThread, backend: Backend
) -> None:
    """RFC 9110 §9.3.2: a response to HEAD carries no content, errors included; the next response
    on the connection must follow right after the head."""
    with KeepAliveClient(host_routed.port, host="other.example") as client:
        response = client.request("HEAD", "/x")
        assert_no_route(response)
        assert response.body == b""
        # Had a body been sent, it would be read as the start of this response and fail to parse.
        assert_no_route(client.request("GET", "/y"))
    # The same on the wire: nothing follows the blank line that ends the head.
    with connect(host_routed.port, timeout=3.0) as sock:
        sock.sendall(b"HEAD /x HTTP/1.1\r\nHost: other.example\r\n\r\n")
        head, after = recv_head(sock)
        assert head.startswith(b"HTTP/1.1 404 ")
        assert after == b"", after
        readable, _, _ = select.select([sock], [], [], 0.1)
        assert not readable or sock.recv(4096) == b"", "bytes after a HEAD response head"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            b"GET /x HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
            id="http11-connection-close",
        ),
        pytest.param(b"GET /x HTTP/1.0\r\nHost: other.example\r\n\r\n", id="http10"),
    ],
)
def test_no_route_honours_connection_close(
    host_routed: GatewayThread, backend: Backend, raw: bytes
) -> None:
    """RFC 9112 §9.6: after answering a request with the "close" option (or an HTTP/1.0 request
    without keep-alive, §9.3) the server MUST close the connection, and SHOULD say so in the
    answer; a locally generated 404 is no exception."""
    with KeepAliveClient(host_routed.port, timeout=3.0) as client:
        client.send(raw)
        response = client.read_response()
        assert_no_route(response)
        assert client.server_closed(1.0), "connection kept open after a request asking to close"
        assert response.header("connection") == "close"


# ---------------------------------------------------------------------------- path normalization


@pytest.mark.parametrize(
    ("sent", "seen"),
    [
        pytest.param("/a/./b/../c", "/a/c", id="dot-segments"),
        pytest.param("/a/b/..", "/a/", id="trailing-dot-dot"),
        pytest.param("/../../etc", "/etc", id="dot-dot-above-root"),
        pytest.param("/a/%2E%2E/b", "/b", id="encoded-dot-segment"),
        pytest.param("/%7Euser", "/~user", id="encoded-unreserved-decoded"),
        pytest.param("/a%2Fb", "/a%2Fb", id="encoded-slash-kept"),
        pytest.param("/a%2fb%3a", "/a%2Fb%3A", id="encoded-hex-uppercased"),
        pytest.param("//double", "//double", id="double-slash-kept"),
        pytest.param("/p?b=/./x&c=%7E&d=a%2fb&e", "/p?b=/./x&c=%7E&d=a%2fb&e", id="query-as-is"),
        pytest.param("/a/./b?x=/../y", "/a/b?x=/../y", id="path-normalized-query-kept"),
    ],
)
def test_normalized_path_reaches_backend(
    gateway: GatewayThread, backend: Backend, sent: str, seen: str
) -> None:
    """RFC 3986 §6.2.2 (case, percent-encoding and dot-segment normalization, §5.2.4) and
    RFC 9110 §4.2.3: equivalent paths reach the backend in one spelling; "%2F" is data, not a
    separator; "//" is significant unless merging is asked for; the query is passed unchanged."""
    response = answer_and_keep_open(
        gateway.port, b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % sent.encode()
    )
    assert response.status == 200
    assert response.json()["target"] == seen
    assert backend.wait_for_requests(1)[0].target == seen.encode()


@pytest.mark.parametrize(
    ("sent", "seen"),
    [("//double", "/double"), ("/a//b///c?q=//x", "/a/b/c?q=//x"), ("/a//../b", "/b")],
)
def test_merge_slashes_when_configured(backend: Backend, sent: str, seen: str) -> None:
    """RFC 3986 §3.3 keeps empty segments meaningful, so merging is opt-in (server.merge_slashes);
    when enabled, runs of "/" in the path (never in the query) collapse before dot-segments."""
    config = one_service(backend.address)
    config["server"] = {"merge_slashes": True}
    with GatewayThread(config) as g:
        response = answer_and_keep_open(
            g.port, b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % sent.encode()
        )
    assert response.json()["target"] == seen
    assert backend.wait_for_requests(1)[0].target == seen.encode()
