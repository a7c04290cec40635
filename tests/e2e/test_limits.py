"""End to end over loopback: request size limits and client-side timeouts.

Small limits and timeouts are configured so that every case runs in well under a second. Timing
assertions are deliberately loose (upper bounds of several times the configured timeout): they only
prove that a deadline fired, or that trickling bytes did not extend it.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.gateway import GatewayThread
from tests.e2e.protocol_errors import assert_error
from tests.support.backends import Backend
from tests.support.client import (
    KeepAliveClient,
    build_request,
    connect,
    parse_responses,
    send_raw,
)

MAX_REQUEST_LINE = 256
MAX_HEADER_BYTES = 1024
MAX_HEADER_COUNT = 10
MAX_BODY = 1000

LIMITS: dict[str, Any] = {
    "max_request_line": MAX_REQUEST_LINE,
    "max_header_bytes": MAX_HEADER_BYTES,
    "max_header_count": MAX_HEADER_COUNT,
    "max_body_bytes": MAX_BODY,
}

HEADER_TIMEOUT = 0.3
KEEPALIVE_TIMEOUT = 0.3
BODY_TIMEOUT = 0.3
# Generous: a deadline enforced by a periodic sweep fires within a fraction of the timeout; this
# only has to tell "fired" from "never fires" (or "extended by every trickled byte").
DEADLINE_BOUND = 3.0


def config(backend: Backend, **server: Any) -> dict[str, Any]:
    return {
        "server": server,
        "services": {"web": {"instances": [backend.address]}},
        "routes": [{"path": "/", "service": "web"}],
    }


@pytest.fixture
def limited(backend: Backend) -> Iterator[GatewayThread]:
    with GatewayThread(config(backend, limits=LIMITS)) as g:
        yield g


def head_with_header_bytes(total: int, path: str = "/") -> bytes:
    """A GET whose header lines (``name: value\\r\\n`` each, Host included) add up to ``total``."""
    host_line = len("Host: test.local\r\n")
    filler = total - host_line - len("X-Fill: \r\n")
    assert filler > 0
    return build_request("GET", path, headers=[("X-Fill", "f" * filler)])


def wait_readable(sock: socket.socket, timeout: float) -> bool:
    readable, _, _ = select.select([sock], [], [], timeout)
    return bool(readable)


# ---------------------------------------------------------------------------- request-line limit


def test_request_target_longer_than_limit_is_414(limited: GatewayThread, backend: Backend) -> None:
    """RFC 9112 §3 and RFC 9110 §15.5.15: a request-target longer than the server parses is 414."""
    path = "/" + "a" * MAX_REQUEST_LINE  # one byte over the limit
    with KeepAliveClient(limited.port) as client:
        response = client.request("GET", path)
        assert_error(response, 414, f"longer than {MAX_REQUEST_LINE} bytes")
        assert client.server_closed(2.0)
    assert backend.requests == []


def test_request_target_of_exactly_the_limit_is_accepted(
    limited: GatewayThread, backend: Backend
) -> None:
    """RFC 9112 §3: the limit is inclusive; a target of exactly max_request_line bytes is served."""
    path = "/" + "a" * (MAX_REQUEST_LINE - 1)
    with KeepAliveClient(limited.port) as client:
        response = client.request("GET", path)
        assert response.status == 200
        assert response.json()["target"] == path
        assert not client.server_closed(0.05)


# ---------------------------------------------------------------------------- header limits


def test_too_many_header_fields_is_431(limited: GatewayThread, backend: Backend) -> None:
    """RFC 6585 §5: too many header fields is 431 Request Header Fields Too Large."""
    headers = [(f"X-H{i}", "v") for i in range(MAX_HEADER_COUNT)]  # plus Host: one too many
    with KeepAliveClient(limited.port) as client:
        response = client.request("GET", "/", headers=headers)
        assert_error(response, 431, f"more than {MAX_HEADER_COUNT} header fields")
        assert client.server_closed(2.0)
    assert backend.requests == []


def test_exactly_max_header_count_is_accepted(limited: GatewayThread) -> None:
    """RFC 6585 §5: the limit is inclusive; max_header_count fields (Host included) are fine."""
    headers = [(f"X-H{i}", "v") for i in range(MAX_HEADER_COUNT - 1)]
    with KeepAliveClient(limited.port) as client:
        response = client.request("GET", "/", headers=headers)
        assert response.status == 200
        assert response.json()["headers"][f"x-h{MAX_HEADER_COUNT - 2}"] == "v"
        assert not client.server_closed(0.05)


def test_header_bytes_over_limit_is_431(limited: GatewayThread, backend: Backend) -> None:
    """RFC 6585 §5: header fields larger in total than the server accepts are 431."""
    with KeepAliveClient(limited.port) as client:
        client.send(head_with_header_bytes(MAX_HEADER_BYTES + 1))
        response = client.read_response()
        assert_error(response, 431, f"larger than {MAX_HEADER_BYTES} bytes")
        assert client.server_closed(2.0)
    assert backend.requests == []


def test_header_bytes_of_exactly_the_limit_are_accepted(limited: GatewayThread) -> None:
    """RFC 6585 §5: header lines adding up to exactly max_header_bytes are served."""
    with KeepAliveClient(limited.port) as client:
        client.send(head_with_header_bytes(MAX_HEADER_BYTES))
        response = client.read_response()
        assert response.status == 200
        assert not client.server_closed(0.05)


def test_giant_header_value_in_small_pieces_is_cut_off_early(
    limited: GatewayThread, backend: Backend
) -> None:
    """RFC 6585 §5, RFC 9110 §5.4: one endless header value trickled in small pieces is answered
    with 431 once the head passes its limit, not buffered until the value ends."""
    piece = b"v" * 128
    sent_limit = 256 * 1024  # far more than any limit: the value never ends on its own
    with KeepAliveClient(limited.port) as client:
        client.sock.sendall(b"GET / HTTP/1.1\r\nHost: test.local\r\nX-Giant: ")
        sent = 0
        answered = False
        while sent < sent_limit:
            try:
                client.sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break  # the gateway closed: its answer is waiting to be read
            sent += len(piece)
            if wait_readable(client.sock, 0.002):
                answered = True
                break
        assert answered or sent < sent_limit, "no answer while a 256 KiB header value was sent"
        # The head limit (request line + header bytes, with some slack) bounds what is buffered.
        assert sent <= 4 * (MAX_REQUEST_LINE + MAX_HEADER_BYTES) + 4096, sent
        response = client.read_response()
        assert_error(response, 431, "too large")
        assert client.server_closed(2.0)
    assert backend.requests == []


# ---------------------------------------------------------------------------- body limits


def test_content_length_over_limit_is_413_before_anything_goes_upstream(
    limited: GatewayThread, backend: Backend
) -> None:
    """RFC 9110 §15.5.14: a declared Content-Length over the limit is refused with 413 at once,
    before any body byte is read or any byte is sent to the backend."""
    with KeepAliveClient(limited.port) as client:
        # Only the head: the answer must not wait for a body that the gateway will refuse.
        client.send(
            b"POST /upload HTTP/1.1\r\nHost: test.local\r\nContent-Length: %d\r\n\r\n"
            % (MAX_BODY + 1),
            "POST",
        )
        response = client.read_response()
        assert_error(response, 413, f"larger than {MAX_BODY} bytes")
        assert client.server_closed(2.0)
    assert backend.requests == []
    assert backend.connections_accepted == 0


def test_chunked_body_growing_past_limit_is_413(limited: GatewayThread, backend: Backend) -> None:
    """RFC 9110 §15.5.14, RFC 9112 §7.1: a chunked body has no declared size, so the 413 comes
    when the received chunks pass the limit; the request never completes at the backend."""
    chunk = b"x" * 400
    with KeepAliveClient(limited.port) as client:
        client.send(
            b"POST /upload HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST",
        )
        for _ in range(3):  # 1200 bytes > 1000
            try:
                client.sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
        response = client.read_response()
        assert_error(response, 413, f"larger than {MAX_BODY} bytes")
        assert client.server_closed(2.0)
    assert backend.requests == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_of_exactly_the_limit_is_accepted(
    limited: GatewayThread, backend: Backend, chunked: bool
) -> None:
    """RFC 9110 §15.5.14: the limit is inclusive; a body of exactly max_body_bytes is forwarded."""
    body = bytes(range(256)) * 3 + b"z" * (MAX_BODY - 768)
    assert len(body) == MAX_BODY
    if chunked:
        raw = (
            b"POST /upload HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (600, body[:600], 400, body[600:])
        )
    else:
        raw = build_request("POST", "/upload", body=body)
    with KeepAliveClient(limited.port) as client:
        client.send(raw, "POST")
        response = client.read_response()
        assert response.status == 200
        assert response.json()["body_bytes"] == MAX_BODY
        assert not client.server_closed(0.05)
    (received,) = backend.wait_for_requests(1)
    assert received.body_bytes == MAX_BODY


# ---------------------------------------------------------------------------- timeouts


@pytest.fixture
def timed(backend: Backend) -> Iterator[GatewayThread]:
    timeouts = {"header": HEADER_TIMEOUT, "keepalive": KEEPALIVE_TIMEOUT, "body": BODY_TIMEOUT}
    with GatewayThread(config(backend, timeouts=timeouts)) as g:
        yield g


def test_slowloris_head_gets_408_within_header_timeout(
    timed: GatewayThread, backend: Backend
) -> None:
    """RFC 9110 §15.5.9: a head trickled byte by byte is cut off with 408 about the header timeout
    after it began; trickling does not extend the deadline. The connection is then closed."""
    with KeepAliveClient(timed.port, timeout=DEADLINE_BOUND + 2) as client:
        started = time.monotonic()
        client.sock.sendall(b"GET / HTTP/1.1\r\nHost: test.local\r\n")
        answered = False
        n = 0
        while time.monotonic() - started < DEADLINE_BOUND:
            if wait_readable(client.sock, 0.05):
                answered = True
                break
            try:
                client.sock.sendall(b"X-Slow-%d: y\r\n" % n)
            except (BrokenPipeError, ConnectionResetError):
                answered = True
                break
            n += 1
        elapsed = time.monotonic() - started
        assert answered, f"no answer within {DEADLINE_BOUND}s while the head was trickled"
        assert elapsed >= HEADER_TIMEOUT * 0.8, elapsed
        response = client.read_response()
        assert_error(response, 408, f"not received within {HEADER_TIMEOUT:g}s")
        assert client.server_closed(2.0)
    assert backend.requests == []


def test_slow_clients_do_not_block_others(backend: Backend) -> None:
    """RFC 9112 §9 and §9.5: each connection is managed on its own; clients holding a partial head do not stop
    the gateway from serving other connections, and are served themselves once their head ends."""
    with GatewayThread(config(backend, timeouts={"header": 30})) as gateway:
        slow = [KeepAliveClient(gateway.port) for _ in range(3)]
        try:
            for i, client in enumerate(slow):
                client.sock.sendall(b"GET /slow-client/%d HTTP/1.1\r\nHost: test.local\r\n" % i)
            for i in range(5):
                with KeepAliveClient(gateway.port) as other:
                    response = other.request("GET", f"/other/{i}")
                    assert response.status == 200
                    assert response.json()["target"] == f"/other/{i}"
            for client in slow:
                assert not wait_readable(client.sock, 0), "a partial head was answered"
            for i, client in enumerate(slow):
                client.send(b"X-Late: 1\r\n\r\n")
                response = client.read_response()
                assert response.status == 200
                assert response.json()["target"] == f"/slow-client/{i}"
        finally:
            for client in slow:
                client.close()


def test_idle_keepalive_connection_is_closed_silently(timed: GatewayThread) -> None:
    """RFC 9112 §9.5: a server may close an idle persistent connection at any time; it does so
    after the keep-alive timeout, without sending anything (no 408 for a request never begun)."""
    with KeepAliveClient(timed.port, timeout=DEADLINE_BOUND + 2) as client:
        assert client.request("GET", "/first").status == 200
        idle_since = time.monotonic()
        assert client.request("GET", "/second").status == 200  # still open right after a response
        assert client.server_closed(DEADLINE_BOUND), "idle connection not closed (or data sent)"
        assert time.monotonic() - idle_since >= KEEPALIVE_TIMEOUT * 0.8


def test_connection_that_never_sends_a_byte_is_closed_without_response(
    timed: GatewayThread,
) -> None:
    """RFC 9112 §9.5: a connection that never starts a request is closed after the header timeout
    with no response bytes (there is no request to answer)."""
    with connect(timed.port, timeout=DEADLINE_BOUND + 2) as sock:
        started = time.monotonic()
        assert wait_readable(sock, DEADLINE_BOUND), "idle new connection was not closed"
        try:
            data = sock.recv(1024)
        except ConnectionResetError:
            data = b""
        assert data == b""
        assert time.monotonic() - started >= HEADER_TIMEOUT * 0.8


def test_body_that_stops_arriving_gets_408(timed: GatewayThread, backend: Backend) -> None:
    """RFC 9110 §15.5.9: a client that stops sending its declared body gets 408 after the body
    timeout, with connection: close; the incomplete request never completes at the backend."""
    with KeepAliveClient(timed.port, timeout=DEADLINE_BOUND + 2) as client:
        client.send(
            b"POST /upload HTTP/1.1\r\nHost: test.local\r\nContent-Length: 10\r\n\r\nabc", "POST"
        )
        started = time.monotonic()
        assert wait_readable(client.sock, DEADLINE_BOUND), "no answer to a stalled body"
        assert time.monotonic() - started >= BODY_TIMEOUT * 0.8
        response = client.read_response()
        assert_error(response, 408, "request body not received in time")
        assert client.server_closed(2.0)
    assert backend.requests == []


def test_declared_body_never_started_gets_408_after_body_timeout(backend: Backend) -> None:
    """RFC 9110 §15.5.9: once the head is complete the body timeout applies, also when not a single
    body byte arrives; the (much longer) header timeout must not be what ends the wait."""
    timeouts = {"header": 10, "keepalive": 10, "body": BODY_TIMEOUT}
    with (
        GatewayThread(config(backend, timeouts=timeouts)) as gateway,
        KeepAliveClient(gateway.port, timeout=DEADLINE_BOUND + 2) as client,
    ):
        client.send(
            b"POST /upload HTTP/1.1\r\nHost: test.local\r\nContent-Length: 10\r\n\r\n", "POST"
        )
        assert wait_readable(client.sock, DEADLINE_BOUND), (
            f"no 408 within {DEADLINE_BOUND}s of a head whose body never came "
            f"(body timeout {BODY_TIMEOUT}s)"
        )
        response = client.read_response()
        assert_error(response, 408, "request body not received in time")
        assert client.server_closed(2.0)
    assert backend.requests == []


def test_pipelined_requests_within_limits_are_all_served(limited: GatewayThread) -> None:
    """RFC 9112 §9.3.2: limits apply per request; several requests near the limits, pipelined in
    one write, are each accepted (head sizes are not summed across requests)."""
    one = head_with_header_bytes(MAX_HEADER_BYTES - 50)
    last = build_request("GET", "/last", headers={"Connection": "close"})
    data = send_raw(limited.port, one * 4 + last)
    responses = parse_responses(data)
    assert [r.status for r in responses] == [200] * 5
