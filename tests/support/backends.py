"""Real HTTP/1.1 backends for end-to-end tests.

Each ``Backend`` listens on 127.0.0.1 (port 0) and runs its own event loop in a background thread:
an asyncio Protocol with ``httptools`` for parsing, fast enough to stream a gibibyte at hundreds of
MB/s. Request bodies are hashed as they arrive and response bodies are views into a shared pattern
buffer, so neither is ever held whole. What a request gets is chosen by its path:

==========================================  ===================================================
``/status/NNN``                             that status, a short body (none for 204, 304, HEAD)
``/stream?bytes=N&chunked=0|1&chunk=SIZE``  N pattern bytes, Content-Length or chunked
``/trailers``                               chunked "hello" "world", x-checksum/x-count trailers
``/until-close``                            no Content-Length, no Transfer-Encoding: ends at close
``/slow?delay=SECONDS``                     waits, then 200 "slow"
``/hang``                                   never answers
``/reset``                                  resets the connection at once, without an answer
``/continue``                               "100 Continue" before reading the body, then default
anything else                               200 JSON echo of the request (also the upload sink)
==========================================  ===================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from typing import Self

from tests.support.backend_connection import BackendConnection, ReceivedRequest
from tests.support.lifecycle import StartStop, close_server
from tests.support.processes import free_port

__all__ = ["Backend", "ReceivedRequest", "refused_port"]


def refused_port() -> int:
    """A loopback port with nothing listening: connecting to it is refused."""
    return free_port()


class Backend(StartStop):
    """An HTTP/1.1 server on 127.0.0.1 in a background thread; see the module docstring."""

    def __init__(self, name: str = "backend", ssl: ssl.SSLContext | None = None) -> None:
        """``ssl``: serve HTTPS with this server context (an upstream that speaks TLS)."""
        self.name = name
        self.ssl = ssl
        self.delay = 0.0
        self.close_after_response = False
        self._port = 0
        self._requests: list[ReceivedRequest] = []
        self._changed = threading.Condition()
        self._connections: set[BackendConnection] = set()
        self._accepted = 0
        self._protocols_made = 0  # by the server's factory: a transport is being set up for each
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError(f"backend {self.name!r} already started")
        self._thread = threading.Thread(target=self._run, name=f"backend-{self.name}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise RuntimeError(f"backend {self.name!r} failed to start") from self._start_error
        return self

    def stop(self) -> None:
        loop, stop_requested, thread = self._loop, self._stop_requested, self._thread
        if thread is None:
            return
        if loop is not None and stop_requested is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(stop_requested.set)
        thread.join(10.0)
        if thread.is_alive():
            raise RuntimeError(f"backend {self.name!r} did not stop within 10 s")

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by start() if it happened before ready
            self._start_error = exc
            self._ready.set()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop_requested = asyncio.Event()
        server = await loop.create_server(
            self._new_connection,
            "127.0.0.1",
            0,
            backlog=1024,
            reuse_address=True,
            ssl=self.ssl,
        )
        self._port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop_requested.wait()
        finally:
            await close_server(server)
            # A TLS connection gets its protocol's connection_made only after its handshake:
            # wait for those under way, at most 0.1 s (a failed handshake never gets there).
            for _ in range(20):
                if self._protocols_made <= self._accepted:
                    break
                await asyncio.sleep(0.005)
            for _ in range(100):  # bounded: a lost connection_lost must not hang the stop
                if not self._connections:
                    break
                connections = list(self._connections)
                for connection in connections:
                    connection.abort()
                await asyncio.gather(*(c.finished() for c in connections))
                await asyncio.sleep(0)  # connection_lost, which forgets them, runs now
            await server.wait_closed()

    # ---- what tests read and set --------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError(f"backend {self.name!r} is not started")
        return self._port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A snapshot of the requests received so far, in the order they completed."""
        with self._changed:
            return list(self._requests)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Wait until at least ``count`` requests have been received; returns them all."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"backend {self.name!r} got {len(self._requests)} of {count} requests "
                        f"in {timeout}s"
                    )
                self._changed.wait(remaining)
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._changed:
            self._requests.clear()

    @property
    def connections_accepted(self) -> int:
        with self._changed:
            return self._accepted

    @property
    def open_connections(self) -> int:
        with self._changed:
            return len(self._connections)

    def set_delay(self, seconds: float) -> None:
        """Wait this long before every answer from now on."""
        self.delay = seconds

    # ---- called from the backend's loop -------------------------------------------------------

    def record_request(self, request: ReceivedRequest) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    def _new_connection(self) -> BackendConnection:
        self._protocols_made += 1
        return BackendConnection(self)

    def connection_opened(self, connection: BackendConnection) -> None:
        with self._changed:
            self._accepted += 1
            self._connections.add(connection)
            self._changed.notify_all()

    def connection_closed(self, connection: BackendConnection) -> None:
        with self._changed:
            self._connections.discard(connection)
            self._changed.notify_all()

    def __repr__(self) -> str:
        return f"<Backend {self.name} {self.address if self._port else 'stopped'}>"
