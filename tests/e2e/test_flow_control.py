"""Backpressure and connection reuse: slow readers, pooled connections, idle limits."""

from __future__ import annotations

import socket
import threading
import time

from tests.e2e.gateway import GatewayThread
from tests.support.backends import Backend
from tests.support.client import KeepAliveClient, request


def service(address: str, **options: object) -> dict[str, object]:
    return {
        "services": {"web": {"instances": [address], **options}},
        "routes": [{"path": "/", "service": "web"}],
    }


def read_response_slowly(sock: socket.socket, pause: float) -> bytes:
    """Read nothing for ``pause`` seconds (the gateway must stop reading upstream), then all of it."""
    time.sleep(pause)
    data = b""
    sock.settimeout(10)
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if b"content-length: 8388608" in head.lower() and len(body) >= 8 << 20:
            break
    return data


def test_slow_reader_then_reuse_of_the_same_upstream_connection() -> None:
    """A response that ends while the client is behind must leave the upstream connection
    reading again when it returns to the pool, or the next request on it hangs."""
    with Backend() as backend, GatewayThread(service(backend.address, read_timeout="3s")) as g:
        sock = socket.create_connection(("127.0.0.1", g.port))
        sock.sendall(b"GET /stream?bytes=8388608 HTTP/1.1\r\nHost: t\r\n\r\n")
        data = read_response_slowly(sock, 0.5)
        assert len(data.partition(b"\r\n\r\n")[2]) == 8 << 20
        sock.sendall(b"GET /second HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
        sock.close()
        assert rest.startswith(b"HTTP/1.1 200 OK")
        assert b'"/second"' in rest
        started = time.monotonic()
        for i in range(3):  # served over the pooled connection the slow response used
            assert request(g.port, "GET", f"/next/{i}").status == 200
        assert time.monotonic() - started < 2.0
        assert backend.connections_accepted == 1


def test_idle_upstream_connections_close_after_idle_timeout() -> None:
    with Backend() as backend:
        with GatewayThread(service(backend.address, pool={"idle_timeout": "0.3s"})) as g:
            assert request(g.port, "GET", "/").status == 200
            assert backend.open_connections == 1
            deadline = time.monotonic() + 3
            while backend.open_connections and time.monotonic() < deadline:
                time.sleep(0.05)
            assert backend.open_connections == 0
            assert request(g.port, "GET", "/again").status == 200
        assert backend.connections_accepted == 2


def test_max_idle_caps_the_connections_kept() -> None:
    with Backend() as backend:
        backend.set_delay(0.2)
        with GatewayThread(service(backend.address, pool={"max_idle": 1})) as g:
            clients = [KeepAliveClient(g.port) for _ in range(3)]
            try:
                for c in clients:
                    c.send_request("GET", "/")
                assert [c.read_response().status for c in clients] == [200, 200, 200]
            finally:
                for c in clients:
                    c.close()
            assert backend.connections_accepted == 3
            deadline = time.monotonic() + 3
            while backend.open_connections > 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert backend.open_connections == 1  # two closed on release, one kept


def test_hop_by_hop_fields_named_by_the_upstream_are_removed() -> None:
    """RFC 9110 §7.6.1 applies to responses too: Connection and the fields it names."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nConnection: X-Internal, keep-alive\r\nX-Internal: secret\r\n"
                b"Keep-Alive: timeout=5\r\nX-Public: yes\r\nContent-Length: 2\r\n\r\nok"
            )
            time.sleep(0.2)

    threading.Thread(target=answer, daemon=True).start()
    try:
        with GatewayThread(service(f"127.0.0.1:{server.getsockname()[1]}")) as g:
            response = request(g.port, "GET", "/")
        names = [name for name, _ in response.headers]
        assert response.body == b"ok"
        assert "x-internal" not in names
        assert "keep-alive" not in names
        assert response.header("x-public") == "yes"
        assert response.header("connection") is None
    finally:
        server.close()
