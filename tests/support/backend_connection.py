"""One connection of a test backend: parses requests with httptools, answers them in order.

See ``backends.py`` for what each path answers. Request bodies are hashed as they arrive; streamed
response bodies are views into the shared pattern buffer, written as the transport drains.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import struct
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, cast
from urllib.parse import parse_qs

import httptools

from tests.support.pattern import pattern_views

if TYPE_CHECKING:
    from tests.support.backends import Backend

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as a backend received it, recorded once its body has been read."""

    method: str
    target: bytes  # the request-target exactly as received
    http_version: str
    headers: Headers  # in order, names as sent
    body_bytes: int
    body_sha256: str
    trailers: Headers

    @property
    def path(self) -> str:
        return self.target.partition(b"?")[0].decode("latin-1")

    def header(self, name: str) -> str | None:
        """Header ``name`` (any case), repeated fields joined with ``", "``; None when absent."""
        return _joined(self.headers, name)

    def header_names(self) -> list[str]:
        return [raw.decode("latin-1").lower() for raw, _ in self.headers]


def _joined(headers: Headers, name: str) -> str | None:
    wanted = name.lower().encode("latin-1")
    values = [value.decode("latin-1") for raw, value in headers if raw.lower() == wanted]
    return ", ".join(values) if values else None


@dataclass
class _Exchange:
    """A request being received: queued when its head is complete, finished with its body."""

    target: bytearray = field(default_factory=bytearray)
    method: str = ""
    http_version: str = ""
    headers: Headers = field(default_factory=list)
    trailers: Headers = field(default_factory=list)
    head_done: bool = False
    body_bytes: int = 0
    body_digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    keep_alive: bool = True
    malformed: bool = False
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self) -> ReceivedRequest:
        return ReceivedRequest(
            method=self.method,
            target=bytes(self.target),
            http_version=self.http_version,
            headers=list(self.headers),
            body_bytes=self.body_bytes,
            body_sha256=self.body_digest.hexdigest(),
            trailers=list(self.trailers),
        )


class BackendConnection(asyncio.Protocol):
    """One accepted connection: parses requests and answers them strictly in order."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._parser = httptools.HttpRequestParser(self)
        self._queue: asyncio.Queue[_Exchange] = asyncio.Queue()
        self._current: _Exchange | None = None
        self._parsing = True
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._transport: asyncio.Transport | None = None
        self._worker: asyncio.Task[None] | None = None

    # ---- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._backend.connection_opened(self)
        self._worker = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        if not self._parsing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Switching protocols is not something these backends do: answer, then close.
            self._parsing = False
        except httptools.HttpParserError:
            self._parsing = False
            bad = self._current if self._current and self._current.head_done else None
            if bad is None:
                bad = _Exchange()
                self._queue.put_nowait(bad)
            bad.malformed = True
            bad.complete.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._can_write.set()
        if self._worker is not None:
            self._worker.cancel()
        self._backend.connection_closed(self)

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # ---- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._current = _Exchange()

    def on_url(self, url: bytes) -> None:
        assert self._current is not None
        self._current.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._current is not None
        exchange = self._current
        (exchange.trailers if exchange.head_done else exchange.headers).append((name, value))

    def on_headers_complete(self) -> None:
        assert self._current is not None
        exchange = self._current
        exchange.method = self._parser.get_method().decode("latin-1")
        exchange.http_version = self._parser.get_http_version()
        exchange.head_done = True
        # Queued before the body arrives so that /continue can answer "100 Continue" first.
        self._queue.put_nowait(exchange)

    def on_body(self, body: bytes) -> None:
        assert self._current is not None
        self._current.body_bytes += len(body)
        self._current.body_digest.update(body)

    def on_message_complete(self) -> None:
        assert self._current is not None
        exchange, self._current = self._current, None
        exchange.keep_alive = self._parser.should_keep_alive()
        self._backend.record_request(exchange.record())
        exchange.complete.set()

    # ---- answering ----------------------------------------------------------------------------

    async def _serve(self) -> None:
        while True:
            exchange = await self._queue.get()
            path, _, query = bytes(exchange.target).partition(b"?")
            if path == b"/reset" and not exchange.malformed:
                self._reset()
                return
            if path == b"/continue" and _joined(exchange.headers, "expect") == "100-continue":
                self._write_head(100, [])
            await exchange.complete.wait()
            if exchange.malformed:
                self._write_head(400, [("Content-Length", "0")], close=True)
                self._close()
                return
            if path == b"/hang":
                await asyncio.Event().wait()  # cancelled when the connection closes
            if self._backend.delay > 0:
                await asyncio.sleep(self._backend.delay)
            close = not exchange.keep_alive or self._backend.close_after_response
            try:
                close = await self._answer(exchange, path, query.decode("latin-1"), close)
            except (ValueError, KeyError) as exc:  # a test asked for something malformed
                body = f"{type(exc).__name__}: {exc}\n".encode()
                self._answer_fixed(exchange, 500, body, "text/plain", close=True)
                close = True
            # After an Upgrade request nothing more is parsed, so nothing more can be answered.
            if close or (not self._parsing and self._queue.empty()):
                self._close()
                return

    async def _answer(self, exchange: _Exchange, path: bytes, query_text: str, close: bool) -> bool:
        """Write the answer chosen by ``path``; True when the connection must close after it."""
        query = {name: values[-1] for name, values in parse_qs(query_text).items()}
        if path == b"/until-close":
            self._write_head(200, [("Content-Type", "text/plain")])
            self._write(b"streamed until close")
            return True
        if path.startswith(b"/status/"):
            self._answer_status(exchange, path, close)
        elif path == b"/stream":
            await self._answer_stream(exchange, query, close)
        elif path == b"/trailers":
            self._answer_trailers(close)
        elif path == b"/slow":
            await asyncio.sleep(float(query.get("delay", "1")))
            self._answer_fixed(exchange, 200, b"slow", "text/plain", close)
        else:
            self._answer_echo(exchange, close)
        return close

    def _answer_echo(self, exchange: _Exchange, close: bool) -> None:
        headers: dict[str, str] = {}
        for raw_name, raw_value in exchange.headers:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        body = json.dumps(
            {
                "backend": self._backend.name,
                "method": exchange.method,
                "target": exchange.target.decode("latin-1"),
                "headers": headers,
                "body_bytes": exchange.body_bytes,
                "body_sha256": exchange.body_digest.hexdigest(),
            }
        ).encode()
        self._answer_fixed(exchange, 200, body, "application/json", close)

    def _answer_status(self, exchange: _Exchange, path: bytes, close: bool) -> None:
        code = path.removeprefix(b"/status/")
        status = int(code) if code.isdigit() and 200 <= int(code) <= 599 else 400
        self._answer_fixed(exchange, status, b"status %d\n" % status, "text/plain", close)

    def _answer_fixed(
        self, exchange: _Exchange, status: int, body: bytes, content_type: str, close: bool
    ) -> None:
        if status in (204, 304):
            self._write_head(status, [], close=close)
            return
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        self._write_head(status, headers, close=close)
        if exchange.method != "HEAD":
            self._write(body)

    async def _answer_stream(self, exchange: _Exchange, query: dict[str, str], close: bool) -> None:
        total = int(query.get("bytes", "0"))
        chunked = query.get("chunked", "0") == "1"
        chunk_size = int(query.get("chunk", str(64 * 1024)))
        framing = ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(total))
        self._write_head(200, [("Content-Type", "application/octet-stream"), framing], close=close)
        if exchange.method == "HEAD":
            return
        for view in pattern_views(total, chunk_size):
            if chunked:
                self._write(b"%x\r\n" % len(view))
                self._write(view)
                self._write(b"\r\n")
            else:
                self._write(view)
            if not await self._drain():
                return
        if chunked:
            self._write(b"0\r\n\r\n")

    def _answer_trailers(self, close: bool) -> None:
        headers = [
            ("Content-Type", "text/plain"),
            ("Transfer-Encoding", "chunked"),
            ("Trailer", "x-checksum, x-count"),
        ]
        self._write_head(200, headers, close=close)
        self._write(b"5\r\nhello\r\n5\r\nworld\r\n0\r\nx-checksum: abc\r\nx-count: 2\r\n\r\n")

    # ---- writing ------------------------------------------------------------------------------

    def _write_head(self, status: int, headers: list[tuple[str, str]], close: bool = False) -> None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if close:
            lines.append("Connection: close")
        self._write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def _write(self, data: bytes | memoryview) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def _drain(self) -> bool:
        """Wait while the transport's buffer is over its high-water mark; False once closed."""
        if self._can_write.is_set():
            await asyncio.sleep(0)  # let other connections run during a long stream
        else:
            await self._can_write.wait()
        return self._transport is not None and not self._transport.is_closing()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _reset(self) -> None:
        if self._transport is None:
            return
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER with a zero timeout turns close() into an RST.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._transport.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def finished(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
