"""Upstream failures become statuses a client can read: 502, 503, 504, and retries on connect failure."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter

from tests.e2e.gateway import GatewayThread
from tests.support.backends import Backend, refused_port
from tests.support.client import KeepAliveClient, recv_head, request


def service(*instances: str, **options: object) -> dict[str, object]:
    return {
        "services": {"web": {"instances": list(instances), **options}},
        "routes": [{"path": "/", "service": "web"}],
    }


def assert_readable_error(response: object, status: int, cause: str) -> None:
    from tests.support.client import Response

    assert isinstance(response, Response)
    assert response.status == status
    assert response.header("portway-error") == cause
    rid = response.header("x-request-id")
    assert rid
    text = response.body.decode()
    assert text.startswith(f"{status} ")
    assert f"request id: {rid}" in text
    assert "Traceback" not in text


def test_connect_refused_everywhere_is_502() -> None:
    with GatewayThread(service(f"127.0.0.1:{refused_port()}")) as g:
        response = request(g.port, "GET", "/")
    assert_readable_error(response, 502, "upstream_connect_failed")
    assert "connection refused" in response.body.decode()


def test_connect_failure_is_retried_on_another_instance() -> None:
    """Nothing was sent to the dead instance, so any method may move on to a live one."""
    with Backend("alive") as alive:
        dead = f"127.0.0.1:{refused_port()}"
        with GatewayThread(service(dead, alive.address)) as g:
            statuses = [request(g.port, "POST", f"/r/{i}", body=b"x").status for i in range(10)]
        assert statuses == [200] * 10
        assert len(alive.requests) == 10


def test_service_without_healthy_instance_is_503() -> None:
    with GatewayThread(service()) as g:
        response = request(g.port, "GET", "/")
    assert_readable_error(response, 503, "no_healthy_instance")
    assert "'web'" in response.body.decode()


def test_instances_that_refused_are_ejected_then_503() -> None:
    """Every instance refused and was ejected; without panic mode a request finds none: 503."""
    dead = [f"127.0.0.1:{refused_port()}" for _ in range(2)]
    config = service(*dead, panic_threshold=0, outlier_detection={"max_ejection_percent": 100})
    with GatewayThread(config) as g:
        first = request(g.port, "GET", "/")
        second = request(g.port, "GET", "/")
    assert first.status == 502
    assert_readable_error(second, 503, "no_healthy_instance")


def test_panic_mode_keeps_trying_when_too_few_instances_are_left() -> None:
    """Panic threshold (default 50%): with every instance ejected, traffic goes to all of them
    rather than failing everything, so a request still reaches an instance that came back."""
    with Backend("back") as back:
        dead_port = refused_port()
        config = service(f"127.0.0.1:{dead_port}", back.address, connect_retries=0)
        with GatewayThread(config) as g:
            statuses = [request(g.port, "GET", "/").status for _ in range(6)]
        # Round robin sends the first request to the dead instance (502, ejected); from then on
        # 1 of 2 instances is available (50%, not below the threshold) and the live one answers.
        assert statuses[0] == 502
        assert statuses[1:] == [200] * 5


def test_upstream_read_timeout_is_504() -> None:
    with Backend() as backend, GatewayThread(service(backend.address, read_timeout="0.3s")) as g:
        started = time.monotonic()
        response = request(g.port, "GET", "/hang")
        elapsed = time.monotonic() - started
    assert_readable_error(response, 504, "upstream_timeout")
    assert 0.25 < elapsed < 3.0


def test_connect_timeout_is_504() -> None:
    """A listener whose accept queue is full never completes the handshake: connect times out."""
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(0)
    port = blocker.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):  # fill the backlog so further SYNs are dropped
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            fillers.append(s)
        time.sleep(0.1)
        config = service(f"127.0.0.1:{port}", connect_timeout="0.3s", connect_retries=0)
        with GatewayThread(config) as g:
            response = request(g.port, "GET", "/", timeout=10)
        assert_readable_error(response, 504, "upstream_timeout")
    finally:
        for s in fillers:
            s.close()
        blocker.close()


def test_upstream_reset_before_response_is_502() -> None:
    with Backend() as backend, GatewayThread(service(backend.address)) as g:
        response = request(g.port, "POST", "/reset", body=b"data")
    assert_readable_error(response, 502, "upstream_reset")


def test_invalid_upstream_response_is_502() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def garbage() -> None:  # every try (the first and its retries) gets garbage
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            conn.close()

    thread = threading.Thread(target=garbage, daemon=True)
    thread.start()
    try:
        with GatewayThread(service(f"127.0.0.1:{server.getsockname()[1]}")) as g:
            response = request(g.port, "GET", "/")
        assert_readable_error(response, 502, "upstream_bad_response")
    finally:
        server.close()


def test_response_cut_after_head_closes_client_connection() -> None:
    """Once the status line went out, a broken upstream can only end the client connection."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def truncated() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        conn.close()

    threading.Thread(target=truncated, daemon=True).start()
    try:
        with GatewayThread(service(f"127.0.0.1:{server.getsockname()[1]}")) as g:
            sock = socket.create_connection(("127.0.0.1", g.port), timeout=5)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            sock.close()
        assert data.startswith(b"HTTP/1.1 200 OK")
        assert data.endswith(b"only part")  # what arrived was relayed, then the connection closed
    finally:
        server.close()


def _one_answer_per_connection_server() -> tuple[socket.socket, list[int]]:
    """Answers the first request on each connection and closes it at the second without a word:
    what a keep-alive connection looks like when the upstream's idle timeout fired as we reused it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    served: list[int] = []

    def handle(conn: socket.socket, number: int) -> None:
        with conn:
            try:
                recv_head(conn)
            except EOFError:
                return
            body = b"connection %d" % number
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            served.append(number)
            conn.recv(65536)  # the second request: dropped

    def accept() -> None:
        number = 0
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            number += 1
            threading.Thread(target=handle, args=(conn, number), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return server, served


def test_stale_pooled_connection_is_replayed_for_idempotent_request() -> None:
    server, _served = _one_answer_per_connection_server()
    try:
        address = f"127.0.0.1:{server.getsockname()[1]}"
        with GatewayThread(service(address)) as g, KeepAliveClient(g.port) as client:
            bodies = [client.request("GET", f"/{i}").body for i in range(3)]
        assert bodies == [b"connection 1", b"connection 2", b"connection 3"]
    finally:
        server.close()


def test_stale_pooled_connection_is_not_replayed_for_post() -> None:
    """A POST may have had effects: it is not repeated; the client gets a 502 it can decide on."""
    server, served = _one_answer_per_connection_server()
    try:
        address = f"127.0.0.1:{server.getsockname()[1]}"
        with GatewayThread(service(address)) as g, KeepAliveClient(g.port) as client:
            assert client.request("POST", "/a", body=b"1").body == b"connection 1"
            second = client.request("POST", "/b", body=b"2")
        assert_readable_error(second, 502, "upstream_reset")
        assert served == [1]
    finally:
        server.close()


def test_other_services_unaffected_by_a_dead_one() -> None:
    with Backend("ok") as ok:
        config = {
            "services": {
                "dead": {"instances": [f"127.0.0.1:{refused_port()}"]},
                "ok": {"instances": [ok.address]},
            },
            "routes": [
                {"path": "/dead", "service": "dead"},
                {"path": "/", "service": "ok"},
            ],
        }
        with GatewayThread(config) as g:
            results = Counter(request(g.port, "GET", path).status for path in ["/dead", "/ok"] * 5)
    assert results[200] == 5  # the healthy service never noticed
    assert set(results) <= {200, 502, 503}
