"""WebSocket tunnels through the gateway, over real sockets (RFC 6455 §4, RFC 9110 §7.8).

RFC 6455 §4: the opening handshake is an HTTP/1.1 GET with ``Upgrade: websocket`` and
``Connection: Upgrade``; the server's ``101 Switching Protocols`` ends HTTP on the connection, and
from then on it carries frames. RFC 9110 §7.8: a server may ignore ``Upgrade`` and answer
normally; ``Upgrade`` and ``Connection`` are hop-by-hop, so an intermediary forwarding an upgrade
sends its own. The gateway routes and polices the handshake like any request, forwards the
upgrade fields for ``websocket`` only, and after the upstream's 101 relays raw bytes both ways.

Backends: the ``websockets`` library's server (``WsBackend``) and a raw socket server that writes
its 101 and a frame in one write (``RawWsBackend``); clients: the ``websockets`` library and raw
sockets with hand-made frames (``tests/support/websocket.py``).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from portway.server.http1 import ClientConnection as GatewayClient
from tests.e2e.gateway import GatewayThread
from tests.support.admin import admin_get, metric_value, wait_until
from tests.support.client import connect as tcp_connect
from tests.support.client import send_raw
from tests.support.websocket import (
    STREAM_CHUNK,
    STREAM_MESSAGES,
    RawWsBackend,
    WsBackend,
    frame,
    handshake,
    read_head,
)

API_KEY = "a-websocket-key-0123456789"
IDLE = 0.5  # read_timeout of the "slow" service: the tunnels' idle timeout


def config(ws: str, raw: str, log: Path) -> dict[str, Any]:
    return {
        "server": {"access_log": {"path": str(log)}},
        "services": {
            "ws": {"instances": [ws]},
            "raw": {"instances": [raw]},
            "slow": {"instances": [ws], "read_timeout": IDLE},
        },
        "policies": {"keyed": {"api_key": {"keys": [{"consumer": "alice", "key": API_KEY}]}}},
        "routes": [
            {"name": "keyed", "path": "/keyed/", "service": "ws", "policies": ["keyed"]},
            {"name": "raw", "path": "/raw", "service": "raw"},
            {"name": "slow", "path": "/slow/", "service": "slow"},
            {
                "name": "rewritten",
                "path": "/old/",
                "service": "ws",
                "rewrite": {"prefix": "/"},
            },
            {"name": "ws", "path": "/", "service": "ws"},
        ],
    }


class Setup:
    def __init__(self, gateway: GatewayThread, backend: WsBackend, raw: RawWsBackend, log: Path):
        self.gateway = gateway
        self.backend = backend
        self.raw = raw
        self.log = log

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.gateway.port}{path}"

    def ws(self, path: str, **kwargs: Any) -> ClientConnection:
        return connect(self.url(path), max_size=None, compression=None, open_timeout=5, **kwargs)

    def tunnels(self) -> dict[tuple[str, str, str], int]:
        return dict(self.gateway.call(lambda: dict(self.gateway.gateway.ctx.stats.tunnels)))

    def open_tunnels(self) -> int:
        return int(self.gateway.call(lambda: self.gateway.gateway.ctx.stats.tunnels_open))

    def log_entries(self, count: int) -> list[dict[str, Any]]:
        def entries() -> list[dict[str, Any]]:
            if not self.log.exists():
                return []
            lines = self.log.read_text().splitlines()
            return [json.loads(line) for line in lines] if len(lines) >= count else []

        found = wait_until(entries, 5)
        assert found, f"fewer than {count} access log lines"
        return list(found)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    log = tmp_path / "access.log"
    with WsBackend() as backend, RawWsBackend() as raw:
        gateway = GatewayThread(config(backend.address, raw.address, log), admin=True)
        with gateway:
            yield Setup(gateway, backend, raw, log)


def test_echo_text_binary_large_and_many_messages(setup: Setup) -> None:
    """Frames of every size cross the tunnel intact both ways (RFC 6455 §5)."""
    with setup.ws("/echo") as ws:
        ws.send("hello, tunnel")
        assert ws.recv(timeout=5) == "hello, tunnel"
        blob = bytes(range(256)) * 4096  # 1 MiB binary message
        ws.send(blob)
        assert ws.recv(timeout=10) == blob
        for i in range(500):
            ws.send(f"message {i}")
        assert [ws.recv(timeout=5) for _ in range(500)] == [f"message {i}" for i in range(500)]
    wait_until(lambda: setup.tunnels().get(("ws", "ws", "closed")) == 1, 5)
    assert setup.open_tunnels() == 0


def test_handshake_headers_reach_the_backend(setup: Setup) -> None:
    """Upgrade and Connection: upgrade are forwarded (hop-by-hop, so the gateway's own, RFC 9110
    §7.6.1 and §7.8); Sec-WebSocket-* pass as they are; forwarding fields are added."""
    with setup.ws("/echo", additional_headers={"Keep-Alive": "timeout=5"}) as ws:
        ws.send("x")
        ws.recv(timeout=5)
        assert ws.response is not None
        assert ws.response.headers["x-request-id"]
    seen = setup.backend.requests[-1]
    assert seen["upgrade"] == "websocket"
    assert seen["connection"].lower() == "upgrade"
    assert seen["sec-websocket-key"] and seen["sec-websocket-version"] == "13"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert "keep-alive" not in seen  # every other hop-by-hop field still goes


def test_rewritten_route_tunnels_to_the_rewritten_path(setup: Setup) -> None:
    with setup.ws("/old/echo") as ws:
        ws.send("via rewrite")
        assert ws.recv(timeout=5) == "via rewrite"


def test_data_sent_right_after_the_handshake_is_not_lost(setup: Setup) -> None:
    """A frame in the same write as the handshake (client side), and a frame in the same write
    as the 101 (upstream side) both arrive: bytes past either head are never dropped."""
    request, accept = handshake("/raw")
    with tcp_connect(setup.gateway.port) as sock:
        sock.sendall(request + frame(0x1, b"first"))
        head, reader = read_head(sock)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"Sec-WebSocket-Accept: " + accept in head
        assert b"x-request-id: " in head and b"connection: upgrade" in head.lower()
        assert reader.frame() == (0x1, b"early")  # the upstream's, after its 101
        # The raw backend echoes bytes: the client's masked frame comes back as it was sent.
        echoed = reader.exactly(2 + 4 + 5)
        assert echoed[0] == 0x81 and echoed[1] == 0x85
    wait_until(lambda: setup.raw.received, 5)
    assert setup.raw.received[:2] == b"\x81\x85"


def test_half_close_is_passed_on_both_ways(setup: Setup) -> None:
    """The client's EOF reaches the upstream (write_eof), which still answers, then closes."""
    request, _ = handshake("/raw")
    with tcp_connect(setup.gateway.port) as sock:
        sock.sendall(request)
        _, reader = read_head(sock)
        assert reader.frame() == (0x1, b"early")
        sock.sendall(b"ping")
        assert reader.exactly(4) == b"ping"
        sock.shutdown(socket.SHUT_WR)
        assert setup.raw.saw_eof.wait(5)
        assert reader.rest() == b"after-eof"
    wait_until(lambda: setup.tunnels().get(("raw", "raw", "closed")) == 1, 5)


@pytest.mark.parametrize(("path", "status"), [("/refuse", 403), ("/plain", 200)])
def test_upstream_refusing_the_upgrade_is_relayed_as_a_response(
    setup: Setup, path: str, status: int
) -> None:
    """RFC 9110 §7.8: the server may ignore Upgrade. Its answer is relayed; nothing is tunnelled
    and the connection closes after it (bytes sent after the handshake are never forwarded)."""
    request, _ = handshake(path)
    answer = send_raw(setup.gateway.port, request + frame(0x1, b"GET /smuggled HTTP/1.1\r\n\r\n"))
    assert answer.startswith(b"HTTP/1.1 %d " % status)
    assert b"connection: close" in answer.lower()
    with pytest.raises(InvalidStatus) as refused:
        setup.ws(path)
    assert refused.value.response.status_code == status
    wait_until(lambda: setup.tunnels().get(("ws", "ws", "refused")) == 2, 5)
    assert setup.open_tunnels() == 0


def test_api_key_policy_refuses_a_handshake_without_a_key(setup: Setup) -> None:
    """Policies judge the handshake like any request: no key, 401 and no tunnel."""
    with pytest.raises(InvalidStatus) as refused:
        setup.ws("/keyed/echo")
    assert refused.value.response.status_code == 401
    assert len(setup.backend.requests) == 0
    with setup.ws("/keyed/echo", additional_headers={"X-API-Key": API_KEY}) as ws:
        ws.send("with key")
        assert ws.recv(timeout=5) == "with key"
    seen = setup.backend.requests[-1]
    assert seen["x-portway-consumer"] == "alice" and "x-api-key" not in seen


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ("Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n", 501),
        ("Upgrade: websocket, foo\r\n", 501),
    ],
)
def test_other_upgrades_keep_the_501(setup: Setup, extra: str, status: int) -> None:
    request = f"GET /echo HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\n{extra}\r\n"
    answer = send_raw(setup.gateway.port, request.encode())
    assert answer.startswith(b"HTTP/1.1 %d " % status)
    assert b"portway-error: upgrade_not_supported" in answer


def test_connect_stays_405_and_an_upgrade_with_a_body_is_400(setup: Setup) -> None:
    answer = send_raw(setup.gateway.port, b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 405 ")
    request, _ = handshake("/echo", extra="Content-Length: 3\r\n")
    assert send_raw(setup.gateway.port, request + b"abc").startswith(b"HTTP/1.1 400 ")


def test_close_from_the_client_and_from_the_backend(setup: Setup) -> None:
    with setup.ws("/echo") as ws:
        ws.send("x")
        ws.recv(timeout=5)
    assert setup.backend.closed.wait(5)
    with setup.ws("/bye") as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.reason == "bye"
    wait_until(lambda: setup.tunnels().get(("ws", "ws", "closed")) == 2, 5)
    assert setup.open_tunnels() == 0


def test_a_silent_tunnel_is_closed_after_the_services_read_timeout(setup: Setup) -> None:
    with setup.ws("/slow/echo") as ws:
        ws.send("x")
        assert ws.recv(timeout=5) == "x"
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        waited = time.monotonic() - started
    assert IDLE * 0.5 <= waited < IDLE + 2
    wait_until(lambda: setup.tunnels().get(("slow", "slow", "idle_timeout")) == 1, 5)


def test_a_client_that_does_not_read_holds_the_backend_back(setup: Setup) -> None:
    """Backpressure: the gateway stops reading the upstream while the client's buffer is full, so
    neither grows without bound; every byte still arrives once the client reads."""
    with setup.ws("/stream") as ws:
        time.sleep(1.5)
        sent_while_stalled = setup.backend.streamed
        total = STREAM_CHUNK * STREAM_MESSAGES
        assert sent_while_stalled < total // 2, "the backend was not held back"
        buffered = setup.gateway.call(
            lambda: max(
                c.transport.get_write_buffer_size()
                for c in setup.gateway.gateway.ctx.connections
                if isinstance(c, GatewayClient)
            )
        )
        assert buffered <= 1 << 20  # about one high-water mark, not the stream
        received = 0
        while received < total:
            received += len(ws.recv(timeout=10))
        assert received == total and setup.backend.stream_done.is_set()


def test_access_log_and_metrics_when_the_tunnel_closes(setup: Setup) -> None:
    """One access log line and one request count per tunnel, written when it closes: status 101,
    the tunnel's bytes, its lifetime; plus portway_tunnels_total and portway_tunnels_open."""
    with setup.ws("/echo") as ws:
        ws.send(b"a" * 10_000)
        ws.recv(timeout=5)
        time.sleep(0.3)
        assert setup.open_tunnels() == 1
        assert not setup.log.exists() or not setup.log.read_text()
    (entry,) = setup.log_entries(1)
    assert entry["status"] == 101 and entry["route"] == "ws" and entry["service"] == "ws"
    assert entry["bytes_in"] > 10_000 and entry["bytes_out"] > 10_000
    assert entry["total_ms"] >= 300
    wait_until(lambda: setup.open_tunnels() == 0, 5)

    def metrics() -> str:
        setup.gateway.call(setup.gateway.gateway.publish)
        return admin_get(setup.gateway.admin_port, "/metrics").text

    text = wait_until(
        lambda: (
            (t := metrics())
            and metric_value(t, "portway_tunnels_total", route="ws", service="ws", outcome="closed")
            and t
        ),
        5,
    )
    assert text, "portway_tunnels_total never counted the tunnel"
    assert metric_value(text, "portway_tunnels_open") == 0
    count = metric_value(
        text, "portway_requests_total", route="ws", service="ws", method="GET", status_class="1xx"
    )
    assert count == 1


def test_drain_closes_open_tunnels_at_its_deadline(setup: Setup) -> None:
    with setup.ws("/echo") as ws:
        ws.send("x")
        ws.recv(timeout=5)
        finished: list[bool] = []
        drain = threading.Thread(target=lambda: finished.append(setup.gateway.drain(0.5)))
        started = time.monotonic()
        drain.start()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        drain.join(10)
    assert finished == [False]  # the tunnel did not end by itself
    assert time.monotonic() - started >= 0.4
    assert setup.tunnels().get(("ws", "ws", "draining")) == 1
