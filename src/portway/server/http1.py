"""The downstream HTTP/1.1 protocol: parse requests with httptools, run exchanges in order.

Theory of operation. ``ClientConnection`` is the asyncio Protocol of one accepted connection and the
callback target of its httptools parser. When a request head is complete, ``exchange_builder`` checks
it, routes it against the worker's current snapshot and turns it into an ``Exchange``. Exchanges
queue in arrival order; only the first talks to an upstream, so pipelined requests are answered in
order (RFC 9112 §9.3.2). Limits map to their status: request line 414, header size and count 431,
body 413, slow head 408; malformed framing is a 400 (llhttp rejects the smuggling shapes of RFC 9112
§11.2). After a protocol error no further byte is parsed: the connection answers and closes
(``local_answers.protocol_error``). A request whose policies have not decided yet waits in its place
in the queue (``policy_wait``).
"""

from __future__ import annotations

import asyncio
from typing import Final

import httptools

from portway.config.types import ip_in
from portway.errors import (
    BadRequest,
    HeadersTooLarge,
    HttpError,
    PayloadTooLarge,
    RequestTimeout,
    UriTooLong,
)
from portway.policies.chain import PendingChain
from portway.proxy.client import ClientEnd
from portway.proxy.exchange import Exchange
from portway.proxy.upgrade import UpgradeExchange
from portway.server.context import WorkerContext
from portway.server.exchange_builder import new_exchange
from portway.server.listeners import Listener
from portway.server.local_answers import protocol_error
from portway.tls.client_auth import TlsSession
from portway.upstream.forward import HOP_BY_HOP, ClientInfo

PAUSE_PIPELINE: Final = 4
# Requests parsed ahead of the one being answered before the client is paused.
MAX_PIPELINE: Final = 16
_HEAD_SLACK: Final = 1024


class ClientConnection(ClientEnd):
    __slots__ = (
        "access_log",
        "body_timeout",
        "broken",
        "client_ip",
        "closed",
        "ctx",
        "deadline",
        "final_error",
        "head_bytes",
        "head_limit",
        "header_bytes",
        "header_timeout",
        "headers",
        "in_head",
        "info",
        "keepalive_timeout",
        "listener",
        "loop",
        "max_body",
        "max_header_bytes",
        "max_header_count",
        "max_request_line",
        "may_explain",
        "merge_slashes",
        "parser",
        "parsing",
        "paused",
        "policy_waits",
        "port",
        "propagator",
        "proto",
        "queue",
        "special",
        "stats",
        "sweeper",
        "tls",
        "tracing",
        "trailers",
        "transport",
        "url",
        "write_paused",
        "writes",
    )

    def __init__(self, ctx: WorkerContext, listener: Listener) -> None:
        self.ctx = ctx
        self.listener = listener
        port, proto = listener.port, listener.proto
        # Redirects, ACME challenges, HSTS, client certificates: looked at only when configured.
        self.special = listener.handles_specially
        self.tls: TlsSession | None = None  # what the handshake established, on HTTPS listeners
        self.loop = ctx.loop
        self.sweeper = ctx.sweeper
        self.writes = ctx.sweeper.writes
        self.stats = ctx.stats
        self.access_log = ctx.access_log
        self.tracing = ctx.tracing
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # connection_made
        self.port = port
        self.proto = proto
        self.client_ip = ""
        self.info = ClientInfo("", port, proto, False)
        self.may_explain = False
        self.parser = httptools.HttpRequestParser(self)
        # Exchanges in arrival order (a list: at most a few, and compiled list operations are native)
        self.queue: list[Exchange] = []
        self.parsing: Exchange | None = None
        self.in_head = False
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.head_bytes = 0
        self.trailers: list[bytes] | None = None
        self.paused = 0
        self.write_paused = False
        self.broken = False
        self.closed = False
        self.final_error: bytes | None = None
        self.policy_waits: set[PendingChain] | None = None  # verdicts awaited (rarely any)
        self.deadline = 0.0
        # Server settings change only with a restart: copied here, read once per request.
        self.max_request_line = ctx.max_request_line
        self.max_header_bytes = ctx.max_header_bytes
        self.max_header_count = ctx.max_header_count
        self.head_limit = ctx.max_request_line + ctx.max_header_bytes + _HEAD_SLACK
        self.max_body = ctx.max_body
        self.header_timeout = ctx.header_timeout
        self.body_timeout = ctx.body_timeout
        self.keepalive_timeout = ctx.keepalive_timeout
        self.merge_slashes = ctx.merge_slashes
        self.propagator = ctx.propagator

    # -- connection lifecycle ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        ctx = self.ctx
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else ""
        self.client_ip = ip
        self.info = ClientInfo(ip, self.port, self.proto, ip_in(ip, ctx.trusted_proxies))
        self.may_explain = ip_in(ip, ctx.explain_from)
        store = self.listener.store
        if store is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                self.tls = TlsSession(ssl_object, store)
        ctx.connections.add(self)
        ctx.sweeper.add(self)
        self.stats.connections_total += 1
        self.deadline = self.sweeper.now + ctx.header_timeout if ctx.header_timeout else 0.0
        if ctx.draining:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.ctx.connections.discard(self)
        self.ctx.sweeper.discard(self)
        waits = self.policy_waits
        if waits:  # the policies' work for requests nobody will read stops here
            self.policy_waits = None
            for verdict in waits:
                verdict.cancel()
        queue, self.queue = self.queue, []
        for exchange in queue:
            exchange.client_lost()

    def send(self, data: bytes) -> None:
        self.writes.write(self.transport, data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writes.flush()
            self.transport.close()

    def abort(self) -> None:
        self.close()

    @property
    def draining(self) -> bool:
        return self.ctx.draining

    @property
    def idle(self) -> bool:
        return not self.queue and not self.in_head

    def on_deadline(self) -> None:
        if self.in_head and not self.queue:
            protocol_error(
                self,
                RequestTimeout(f"request head not received within {self.ctx.header_timeout:g}s"),
            )
        elif not self.queue:
            self.close()  # idle keep-alive connection (or one that never sent a byte)
        else:
            exchange = self.queue[0]
            if self.parsing is exchange and not exchange.request_done and not exchange.started:
                exchange.fail(408, "request body not received in time", RequestTimeout.cause)
            else:
                self.close()

    # -- flow control ------------------------------------------------------------------------------

    def pause_reading(self, reason: int, paused: bool) -> None:
        before = self.paused
        self.paused = before | reason if paused else before & ~reason
        if self.closed or self.broken:
            return
        if before and not self.paused:
            self.transport.resume_reading()
        elif not before and self.paused:
            self.transport.pause_reading()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.queue:
            self.queue[0].client_write_paused(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.queue:
            self.queue[0].client_write_paused(False)

    # -- reading -----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.broken:
            return
        if self.in_head or self.parsing is None:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            protocol_error(self, cause if isinstance(cause, HttpError) else BadRequest(str(exc)))
            return
        except httptools.HttpParserUpgrade as exc:
            # A WebSocket handshake's head ended (any other upgrade raised in new_exchange): the
            # bytes after it belong to the tunnel, never to this parser (proxy/upgrade.py).
            queue = self.queue
            last = queue[-1] if queue else None
            if isinstance(last, UpgradeExchange):
                last.hold_client(data[exc.args[0] :])
            else:  # answered and closing already: parse nothing more
                self.broken = True
                if not self.closed:
                    self.transport.pause_reading()
            return
        except httptools.HttpParserError as exc:
            protocol_error(self, BadRequest(f"malformed request: {exc}"))
            return
        if self.in_head and self.head_bytes > self.head_limit:
            protocol_error(
                self, HeadersTooLarge() if self.url else UriTooLong("request line too long")
            )
            return
        # Body bytes parsed in this read go upstream in one write (or wait, pausing when many).
        queue = self.queue
        if queue:
            current = queue[0]
            if current.pending:
                current.flush_request()
            parsing = self.parsing
            if parsing is not None and parsing is not current and parsing.pending:
                parsing.flush_request()  # a pipelined body waiting its turn: pauses when large
        else:
            parsing = self.parsing
            if parsing is not None and parsing.pending:
                parsing.flush_request()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.in_head = True
        self.url = b""
        self.headers = []
        self.header_bytes = 0
        self.trailers = None
        header_timeout = self.header_timeout
        self.deadline = self.sweeper.now + header_timeout if header_timeout else 0.0

    def on_url(self, url: bytes) -> None:
        url = self.url + url if self.url else url
        self.url = url
        if len(url) > self.max_request_line:
            raise UriTooLong(f"request-target longer than {self.max_request_line} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:  # a trailer field of a chunked request body
            if self.trailers is None:
                self.trailers = []
            if name.lower() not in HOP_BY_HOP:
                self.trailers.append(b"%s: %s\r\n" % (name, value))
            return
        headers = self.headers
        headers.append((name, value))
        size = self.header_bytes + len(name) + len(value) + 4
        self.header_bytes = size
        if len(headers) > self.max_header_count:
            raise HeadersTooLarge(f"more than {self.max_header_count} header fields")
        if size > self.max_header_bytes:
            raise HeadersTooLarge(f"header fields larger than {self.max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_bytes = 0
        exchange = new_exchange(self)
        self.parsing = exchange
        queue = self.queue
        queue.append(exchange)
        if len(queue) == 1:
            exchange.start()
        elif len(queue) > MAX_PIPELINE:
            self.pause_reading(PAUSE_PIPELINE, True)

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        assert exchange is not None
        body_timeout = self.body_timeout
        if body_timeout:
            self.deadline = self.sweeper.now + body_timeout
        if not exchange.request_body(body):
            raise PayloadTooLarge(f"request body larger than {self.max_body} bytes")

    def on_message_complete(self) -> None:
        exchange = self.parsing
        self.parsing = None
        self.deadline = 0.0
        if exchange is not None and (exchange.request_chunked or not exchange.request_done):
            exchange.request_end(self.trailers)
        self.trailers = None

    # -- ending exchanges ------------------------------------------------------------------------

    def exchange_finished(self, exchange: Exchange, close: bool) -> None:
        queue = self.queue
        if queue and queue[0] is exchange:
            del queue[0]
        if self.paused & PAUSE_PIPELINE and len(queue) <= MAX_PIPELINE // 2:
            self.pause_reading(PAUSE_PIPELINE, False)
        if close or self.closed:
            self.close()
            return
        if queue:
            queue[0].start()
            return
        if self.final_error is not None:
            self.send(self.final_error)
            self.close()
            return
        if self.ctx.draining and not self.in_head:
            self.close()
            return
        if not self.in_head and self.parsing is None:
            keepalive = self.keepalive_timeout
            self.deadline = self.sweeper.now + keepalive if keepalive else 0.0
