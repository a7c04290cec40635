"""A backend whose health endpoint a test can flip, and that counts the checks it receives.

``HealthBackend`` listens on 127.0.0.1 (port 0) in a background thread. ``GET /healthz`` (the path
is settable) answers ``health_status`` with the body ``health_body``; every check is timestamped,
so a test can count checks per interval. Any other request gets ``200`` with the backend's name as
the body and is counted in ``served``. Keep-alive is honoured, as the gateway pools connections.
"""

from __future__ import annotations

import asyncio
import threading
import time
from http import HTTPStatus
from typing import Self, cast

import httptools

from tests.support.lifecycle import StartStop, close_server


class _Connection(asyncio.Protocol):
    def __init__(self, backend: HealthBackend) -> None:
        self.backend = backend
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[bytes, bytes] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.backend.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.backend.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_message_complete(self) -> None:
        assert self.transport is not None
        path = self.url.partition(b"?")[0].decode("latin-1")
        status, body = self.backend.answer(path, self.headers)
        keep_alive = self.parser.should_keep_alive()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            + ("" if keep_alive else "Connection: close\r\n")
            + "\r\n"
        )
        self.transport.write(head.encode("latin-1") + body)
        if not keep_alive:
            self.transport.close()


class HealthBackend(StartStop):
    """See the module docstring; ``health_status`` and ``health_body`` may be set at any time."""

    def __init__(self, name: str, health_path: str = "/healthz") -> None:
        self.name = name
        self.health_path = health_path
        self.health_status = 200
        self.health_body = b"ok"
        self._lock = threading.Lock()
        self._checks: list[tuple[float, str]] = []  # (monotonic time, user agent)
        self._served = 0
        self.connections: set[_Connection] = set()  # touched only on the backend's loop
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def answer(self, path: str, headers: dict[bytes, bytes]) -> tuple[int, bytes]:
        with self._lock:
            if path == self.health_path:
                agent = headers.get(b"user-agent", b"").decode("latin-1")
                self._checks.append((time.monotonic(), agent))
                return self.health_status, self.health_body
            self._served += 1
            return 200, self.name.encode()

    def checks_since(self, since: float) -> list[tuple[float, str]]:
        """Health checks received at or after monotonic time ``since``: (time, user agent)."""
        with self._lock:
            return [check for check in self._checks if check[0] >= since]

    @property
    def served(self) -> int:
        with self._lock:
            return self._served

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name=f"health-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError(f"health backend {self.name!r} did not start")
        return self

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        self._server = loop.run_until_complete(
            loop.create_server(lambda: _Connection(self), "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(close_server(self._server))
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        loop.run_until_complete(self._server.wait_closed())
        loop.run_until_complete(asyncio.sleep(0))  # let the aborts run connection_lost
        loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
