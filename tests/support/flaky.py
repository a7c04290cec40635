"""An instance whose behaviour a test (or a benchmark) switches while traffic flows through it.

``FlakyBackend`` listens on 127.0.0.1 in a background thread (asyncio + httptools) and answers every
request the same way, chosen by its current settings rather than by the path:

* ``status``: the status of every answer (200 by default), with a JSON body naming the backend, the
  method, path and the size and SHA-256 of the request body it received, and an ``x-backend``
  header, so a client knows who answered without parsing the body;
* ``delay``: seconds to wait before answering;
* ``mode``: ``"answer"`` (the default), ``"hang"`` (read the request, never answer) or ``"reset"``
  (read the request, then reset the connection without a byte of answer).

Unlike ``Backend`` it can be stopped and started again **on the same port** (an instance that dies
and comes back), and it counts what it received. A request to ``/_flaky?status=503&delay=0.5&
mode=answer`` changes the settings instead of being counted: that is how a process running
``python -m tests.support.flaky --port N --name NAME`` is driven from outside (see
``bench/fault_injection.py``). Requests on one connection are answered one at a time; pipelining is
not supported (the gateway never pipelines to an instance).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import signal
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal, Self, cast
from urllib.parse import parse_qs

import httptools

from tests.support.lifecycle import StartStop, close_server

Mode = Literal["answer", "hang", "reset"]
MODES: tuple[Mode, ...] = ("answer", "hang", "reset")
CONTROL_PATH = b"/_flaky"


@dataclass(frozen=True)
class Received:
    """One request as the backend received it (its body hashed, not kept)."""

    method: str
    path: str
    body_bytes: int
    body_sha256: str
    at: float  # time.monotonic() when it was complete


class FlakyBackend(StartStop):
    """See the module docstring. Settings may be changed from any thread at any time."""

    def __init__(self, name: str = "flaky", port: int = 0, *, keep_records: int = 10_000) -> None:
        self.name = name
        self.status = 200
        self.delay = 0.0
        self.mode: Mode = "answer"
        self._port = port
        self._keep_records = keep_records
        self._lock = threading.Lock()
        self._received = 0
        self._answered: Counter[int] = Counter()
        self._records: list[Received] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._connections: set[_Connection] = set()

    # ---- settings ------------------------------------------------------------------------------

    def set(
        self, *, status: int | None = None, delay: float | None = None, mode: Mode | None = None
    ) -> None:
        if status is not None:
            if not 200 <= status <= 599:
                raise ValueError(f"status must be from 200 to 599, got {status}")
            self.status = status
        if delay is not None:
            self.delay = delay
        if mode is not None:
            if mode not in MODES:
                raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
            self.mode = mode

    def healthy(self) -> None:
        """Back to normal: 200 at once."""
        self.set(status=200, delay=0.0, mode="answer")

    # ---- what tests read -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError(f"backend {self.name!r} was never started")
        return self._port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def received(self) -> int:
        """Requests received (read whole) so far, control requests excluded."""
        with self._lock:
            return self._received

    @property
    def answered(self) -> Counter[int]:
        """Answers written so far, by status."""
        with self._lock:
            return Counter(self._answered)

    @property
    def records(self) -> list[Received]:
        """The last ``keep_records`` requests received, oldest first."""
        with self._lock:
            return self._records[-self._keep_records :] if self._keep_records else []

    def wait_for_received(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.received < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"backend {self.name!r} received {self.received} of {count} requests "
                    f"in {timeout}s"
                )
            time.sleep(0.005)

    @property
    def running(self) -> bool:
        return self._thread is not None

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Listen (again) on this backend's port; the first start picks a free one."""
        if self._thread is not None:
            raise RuntimeError(f"backend {self.name!r} is already running")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name=f"flaky-{self.name}", daemon=True)
        self._thread.start()
        self._ready.wait(10.0)
        if self._error is not None:
            self._thread.join(1.0)
            self._thread = None
            raise RuntimeError(f"backend {self.name!r} failed to start") from self._error
        return self

    def stop(self) -> None:
        """Close the listener and abort every connection: the instance is gone."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop.set)
        thread.join(10.0)
        if thread.is_alive():
            raise RuntimeError(f"backend {self.name!r} did not stop within 10 s")
        self._thread = None

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start() when it happened before ready
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop = asyncio.Event()
        server = await loop.create_server(
            lambda: _Connection(self),
            "127.0.0.1",
            self._port,
            backlog=1024,
            reuse_address=True,
        )
        self._port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await close_server(server)
            for connection in list(self._connections):
                connection.abort()
            await server.wait_closed()

    # ---- called on the backend's loop ----------------------------------------------------------

    def _record(self, request: Received) -> None:
        with self._lock:
            self._received += 1
            if self._keep_records:
                self._records.append(request)
                if len(self._records) > 2 * self._keep_records:
                    del self._records[: len(self._records) - self._keep_records]

    def _count_answer(self, status: int) -> None:
        with self._lock:
            self._answered[status] += 1

    def _control(self, query: bytes) -> None:
        params = {k: v[-1] for k, v in parse_qs(query.decode("latin-1")).items()}
        mode = params.get("mode")
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.set(
            status=int(params["status"]) if "status" in params else None,
            delay=float(params["delay"]) if "delay" in params else None,
            mode=mode,
        )

    def __repr__(self) -> str:
        return f"<FlakyBackend {self.name} port={self._port} status={self.status} mode={self.mode}>"


class _Connection(asyncio.Protocol):
    def __init__(self, backend: FlakyBackend) -> None:
        self._backend = backend
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body_bytes = 0
        self._digest = hashlib.sha256()
        self._silent = False  # hanging or answering later: ignore anything more the peer sends
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._backend._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._backend._connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()

    def data_received(self, data: bytes) -> None:
        if self._silent:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            self.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._body_bytes = 0
        self._digest = hashlib.sha256()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        self._digest.update(body)

    def on_message_complete(self) -> None:
        backend = self._backend
        keep_alive = self._parser.should_keep_alive()
        method = self._parser.get_method().decode("latin-1")
        path, _, query = self._url.partition(b"?")
        if path == CONTROL_PATH:
            try:
                backend._control(query)
            except (ValueError, KeyError) as exc:
                self._respond(400, {"error": str(exc)}, keep_alive, count=False)
                return
            settings: dict[str, object] = {
                "status": backend.status,
                "delay": backend.delay,
                "mode": backend.mode,
            }
            self._respond(200, settings, keep_alive, count=False)
            return
        request = Received(
            method=method,
            path=path.decode("latin-1"),
            body_bytes=self._body_bytes,
            body_sha256=self._digest.hexdigest(),
            at=time.monotonic(),
        )
        backend._record(request)
        mode, status, delay = backend.mode, backend.status, backend.delay
        if mode == "hang":
            self._silent = True
            return
        if mode == "reset":
            self._reset()
            return
        answer = {
            "backend": backend.name,
            "status": status,
            "method": request.method,
            "path": request.path,
            "body_bytes": request.body_bytes,
            "body_sha256": request.body_sha256,
        }
        if delay > 0:
            self._silent = True
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(delay, self._respond_later, status, answer, keep_alive)
        else:
            self._respond(status, answer, keep_alive)

    def _respond_later(self, status: int, answer: dict[str, object], keep_alive: bool) -> None:
        self._timer = None
        self._silent = False
        self._respond(status, answer, keep_alive)

    def _respond(
        self, status: int, answer: dict[str, object], keep_alive: bool, *, count: bool = True
    ) -> None:
        body = json.dumps(answer).encode()
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            f"Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"X-Backend: {self._backend.name}\r\n"
            + ("" if keep_alive else "Connection: close\r\n")
            + "\r\n"
        )
        self._write(head.encode("latin-1") + body)
        if count:
            self._backend._count_answer(status)
        if not keep_alive:
            self.close()

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _reset(self) -> None:
        transport = self._transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER with a zero timeout turns the close into an RST.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


def main() -> None:
    """Run one flaky backend in the foreground until SIGTERM / SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="flaky")
    args = parser.parse_args()
    backend = FlakyBackend(args.name, args.port, keep_records=0).start()
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    print(f"ready {backend.port}", flush=True)
    done.wait()
    backend.stop()


if __name__ == "__main__":
    main()
