"""One HTTP/1.1 connection to an upstream instance: parse the response, hand events to its exchange.

The connection is bound to at most one exchange at a time. It is reusable only when the response
ended cleanly, the request was sent whole, and neither side asked to close (RFC 9112 §9.3).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, TypeVar

import httptools

if TYPE_CHECKING:
    from portway.upstream.pool import Pool

_T = TypeVar("_T")

try:
    from mypy_extensions import trait as trait  # also used by pool.py
except ImportError:  # not installed: the decorator only tells mypyc how to compile a class

    def trait(cls: _T) -> _T:
        return cls


@trait
class ResponseSink:
    """What a bound connection reports to (the exchange, ``proxy.exchange.Exchange``). A trait
    rather than a ``typing.Protocol`` so that, compiled with mypyc, the connection calls these
    methods natively (once per response event) instead of by name with boxed arguments."""

    __slots__ = ()

    head_request: bool

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        raise NotImplementedError

    def response_body(self, data: bytes) -> None:
        raise NotImplementedError

    def response_trailer(self, name: bytes, value: bytes) -> None:
        raise NotImplementedError

    def response_complete(self) -> None:
        raise NotImplementedError

    def response_flush(self, connection: UpstreamConnection) -> None:
        raise NotImplementedError

    def upstream_lost(self, connection: UpstreamConnection, error: str) -> None:
        raise NotImplementedError

    def upstream_timeout(self, connection: UpstreamConnection) -> None:
        raise NotImplementedError

    def upstream_write_paused(self, paused: bool) -> None:
        raise NotImplementedError

    def response_upgraded(self, connection: UpstreamConnection, rest: bytes) -> bool:
        raise NotImplementedError


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "bytes_received",
        "closed",
        "complete",
        "deadline",
        "exchange",
        "head_done",
        "headers",
        "keep_alive",
        "parser",
        "pool",
        "reading_paused",
        "reason",
        "reused",
        "transport",
        "writes",
    )

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.writes = pool.sweeper.writes  # every write to the instance goes through it
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set in connection_made
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: ResponseSink | None = None
        self.closed = False
        self.deadline = 0.0
        self.reused = False
        self.reading_paused = False
        self._reset_response()

    def _reset_response(self) -> None:
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.bytes_received = 0

    # -- lifecycle -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.pool.sweeper.add(self)

    def pause_reading(self) -> None:
        """The client cannot take more response bytes: stop reading until it can."""
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def bind(self, exchange: ResponseSink, data: bytes, read_timeout: float) -> None:
        self.exchange = exchange
        self.reason = b""
        self.headers = []
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.bytes_received = 0
        self.deadline = self.pool.sweeper.now + read_timeout
        self.writes.write(self.transport, data)

    def send(self, data: bytes) -> None:
        """More of the request (body bytes), after the head ``bind`` sent."""
        self.writes.write(self.transport, data)

    def close(self) -> None:
        """Close without reuse (the exchange was abandoned or the response was not clean)."""
        self.exchange = None
        if not self.closed:
            self.closed = True
            self.writes.flush()
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.sweeper.discard(self)
        self.pool.forget(self)
        exchange, self.exchange = self.exchange, None
        if exchange is not None and not self.complete:
            exchange.upstream_lost(self, "upstream closed the connection")

    def on_deadline(self) -> None:
        exchange = self.exchange
        if exchange is None:  # idle in the pool past idle_timeout
            self.close()
        else:
            exchange.upstream_timeout(self)

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self.reason += status

    # An exchange may abandon this connection mid-parse (a retryable status): from then on the
    # callbacks of the same feed_data find no exchange and drop what they see.

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:
            if self.exchange is not None:
                self.exchange.response_trailer(name, value)
        else:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        parser = self.parser
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # Interim response (e.g. 100 Continue): llhttp completes it as a message of its own.
            exchange.response_head(status, self.reason, self.headers)
            self.reason, self.headers = b"", []
            return
        self.head_done = True
        self.keep_alive = parser.should_keep_alive()
        exchange.response_head(status, self.reason, self.headers)
        if self.exchange is None:  # abandoned for a retry
            return
        if exchange.head_request:
            # llhttp cannot know the request was HEAD: the response ends at its head.
            self.parser = httptools.HttpResponseParser(self)
            self.on_message_complete()

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.response_body(body)

    def on_message_complete(self) -> None:
        if not self.head_done:  # the end of an interim response
            return
        if self.complete:
            return
        self.complete = True
        # llhttp forgets keep-alive once feed_data returns; read it while the message is current.
        self.keep_alive = self.keep_alive and self.parser.should_keep_alive()
        exchange = self.exchange
        if exchange is not None:
            exchange.response_complete()

    # -- transport callbacks ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # bytes on an idle connection: it is out of sync
            self.close()
            return
        self.bytes_received += len(data)
        if self.complete:  # bytes after a complete response (HEAD answered with a body): unsafe
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # A 101: only a WebSocket handshake's exchange takes the connection (proxy/upgrade.py)
            # with the bytes after the head; for any other it is an invalid response.
            if not exchange.response_upgraded(self, data[exc.args[0] :]):
                self._invalid(exchange, exc)
            return
        except httptools.HttpParserError as exc:
            self._invalid(exchange, exc)
            return
        exchange.response_flush(self)

    def _invalid(self, exchange: ResponseSink, exc: Exception) -> None:
        self.exchange = None
        self.closed = True
        self.writes.flush()
        self.transport.close()
        exchange.response_flush(self)
        exchange.upstream_lost(self, f"invalid response from upstream: {exc}")

    def pause_writing(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.upstream_write_paused(True)

    def resume_writing(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.upstream_write_paused(False)
