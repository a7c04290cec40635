"""The downstream HTTP/1.1 protocol: parse requests with httptools, run exchanges in order.

Theory of operation. ``ClientConnection`` is the asyncio Protocol of one accepted connection and the
callback target of its httptools parser. A request head is checked (``request_head``), normalized,
routed against the worker's current snapshot and turned into an ``Exchange``. Exchanges queue in
arrival order; only the first talks to an upstream, so pipelined requests are answered in order
(RFC 9112 §9.3.2). Limits map to their status: request line 414, header size and count 431, body 413,
slow head 408; malformed framing is a 400 (llhttp rejects the smuggling shapes of RFC 9112 §11.2).
After a protocol error no further byte is parsed: the connection answers and closes.

A route's policies may keep a request waiting for their verdict (``PolicyChain.apply`` returns a
``PendingChain``): the exchange is queued like any other but has no service yet, so
``Exchange.start`` leaves it alone and its body bytes are buffered (pausing the client past the high
water mark); once the verdict is known ``_await_policies`` answers it or finishes its dispatch, and
starts it if its turn has come. Synchronous chains never get there.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
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
from portway.messages import LocalAnswer
from portway.observability.access_log import Entry
from portway.policies.base import UNAVAILABLE
from portway.policies.chain import PendingChain
from portway.proxy import responses
from portway.proxy.client import ClientEnd
from portway.proxy.exchange import Exchange
from portway.proxy.service import Service
from portway.proxy.upgrade import UpgradeExchange
from portway.routing import CompiledRoute, TraceStep, normalize_path
from portway.routing.rewrite import Redirect, Rewrite
from portway.server.context import WorkerContext
from portway.server.edge import before_routing
from portway.server.listeners import Listener
from portway.server.request_head import (
    check_host,
    check_transfer_encoding,
    check_version,
    host_for_routing,
    parse_target,
    websocket_upgrade,
)
from portway.tls.client_auth import TlsSession
from portway.upstream.forward import (
    EXPLAIN_HEADER,
    HOP_BY_HOP,
    ClientInfo,
    RequestFields,
    new_request_id,
    original_client,
    valid_request_id,
)

PAUSE_PIPELINE: Final = 4
# Requests parsed ahead of the one being answered before the client is paused.
MAX_PIPELINE: Final = 16
_HEAD_SLACK: Final = 1024
# Host fields seen valid, and their routing form (request_head validates and caches too; this one
# spares the two calls per request): bounded, filled as hosts come.
_ROUTING_HOSTS_LIMIT: Final = 4096
_routing_hosts: Final[dict[bytes, str]] = {}
_request_id_ok: Final = valid_request_id
REWRITE_FAILED: Final = b"rewrite_failed"
_NO_DROP: Final[frozenset[bytes]] = frozenset()
UNAVAILABLE_CAUSE: Final = UNAVAILABLE.encode()
log = logging.getLogger("portway.server")


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
            self._protocol_error(
                RequestTimeout(f"request head not received within {self.ctx.header_timeout:g}s")
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
            self._protocol_error(cause if isinstance(cause, HttpError) else BadRequest(str(exc)))
            return
        except httptools.HttpParserUpgrade as exc:
            # A WebSocket handshake's head ended (any other upgrade raised in _new_exchange): the
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
            self._protocol_error(BadRequest(f"malformed request: {exc}"))
            return
        if self.in_head and self.head_bytes > self.head_limit:
            self._protocol_error(
                HeadersTooLarge() if self.url else UriTooLong("request line too long")
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
        exchange = self._new_exchange()
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

    # -- a request head becomes an exchange ------------------------------------------------------

    def _new_exchange(self) -> Exchange:
        ctx = self.ctx
        parser = self.parser
        method = parser.get_method()
        keep_alive = parser.should_keep_alive()
        headers = self.headers
        fields = RequestFields(headers)
        if keep_alive and fields.connection is None:
            # Only HTTP/1.1 is persistent without a Connection field (RFC 9112 §9.3), and llhttp
            # parses no other version with a minor above 0 (0.9, 1.0, 1.1, 2.0): this is 1.1,
            # known without get_http_version(), which formats a string (~0.3 µs) at every call.
            version = "1.1"
        else:
            version = parser.get_http_version()
            if version != "1.1":
                check_version(version)
        upgrade = None
        if parser.should_upgrade():  # 501 or 405 unless a WebSocket handshake
            upgrade = websocket_upgrade(method, version, self.headers, self._has_body())
        url = self.url
        if url[:1] == b"/":  # origin-form, nearly every request
            # find, not ``in``: bytes.__contains__ first tries the operand as an int, and the
            # TypeError it raises and clears cost more than the search
            if url.find(b"?") >= 0:
                raw_path, question, raw_query = url.partition(b"?")
                path_text = raw_path.decode("ascii")
                query = raw_query.decode("ascii")
            else:
                path_text = url.decode("ascii")
                question = b""
                query = ""
            absolute_authority = None
        else:
            target = parse_target(url, method)
            path_text, query, absolute_authority = target.path, target.query, target.authority
            question = b""
        host = fields.host
        routing_host = (
            _routing_hosts.get(host)
            if host is not None and absolute_authority is None and fields.host_count == 1
            else None
        )
        if routing_host is not None:
            authority: bytes = host  # type: ignore[assignment]  # not None when found
        else:
            authority = check_host(host, fields.host_count, version, absolute_authority)
            routing_host = host_for_routing(authority)
            if authority is host and len(_routing_hosts) < _ROUTING_HOSTS_LIMIT:
                _routing_hosts[authority] = routing_host
        transfer_encoding = fields.transfer_encoding
        if transfer_encoding is not None:
            check_transfer_encoding(transfer_encoding)
        content_length = fields.content_length
        max_body = self.max_body
        if content_length is not None and max_body and int(content_length) > max_body:
            raise PayloadTooLarge(f"request body larger than {max_body} bytes")
        rid = fields.request_id
        if rid is None or _request_id_ok(rid) is None:
            rid = new_request_id()
        if path_text == "*":
            path = path_text
        else:
            try:
                path = normalize_path(path_text, self.merge_slashes)
            except ValueError as exc:
                raise BadRequest(f"invalid path: {exc}") from None
        keep_alive = keep_alive and upgrade is None
        client_ip = self.client_ip
        if fields.xff is not None and self.info.trusted:
            client_ip = original_client(fields.xff, client_ip, ctx.trusted_proxies)
        context = self.propagator.start(fields.traceparent, fields.tracestate)
        http10 = version == "1.0"
        exchange: Exchange
        # Each class named in its own call: compiled, that is a direct call of its constructor,
        # where a class chosen by an expression is called through type() (~0.5 µs a request).
        if upgrade is None:
            exchange = Exchange(self, method, routing_host, path, query, headers, client_ip, rid,
                                context, keep_alive=keep_alive, http10=http10, max_body=max_body)  # fmt: skip
        else:
            upgrading = UpgradeExchange(self, method, routing_host, path, query, headers,
                                        client_ip, rid, context, keep_alive=keep_alive,
                                        http10=http10, max_body=max_body)  # fmt: skip
            upgrading.init_upgrade()
            exchange = upgrading
        if fields.user_agent is not None:
            exchange.user_agent = fields.user_agent.decode("latin-1")
        if fields.referer is not None:
            exchange.referer = fields.referer.decode("latin-1")
        if transfer_encoding is not None or (content_length is not None and content_length != b"0"):
            has_body = True
            body_timeout = self.body_timeout
            self.deadline = self.sweeper.now + body_timeout if body_timeout else 0.0
        else:
            has_body = False
            exchange.request_done = True  # known now; on_message_complete follows at once
            self.deadline = 0.0
        extra = b""
        if self.special:
            decision = before_routing(self.listener, self.tls, exchange)
            if isinstance(decision, LocalAnswer):
                self._answer(exchange, decision, has_body, keep_alive, method)
                return exchange
            extra = decision
        trace: list[TraceStep] | None = [] if fields.explain and self.may_explain else None
        snapshot = ctx.snapshot
        route = snapshot.routes.select(exchange, trace)
        if trace is not None:
            exchange.explain = _explain_header(route.name if route else None, trace)
        if route is None:
            close = has_body or not keep_alive or ctx.draining
            exchange.answer_locally(
                responses.local_response(
                    404,
                    "no route matches this host and path",
                    rid,
                    cause=responses.NO_ROUTE,
                    close=close,
                    head_only=method == b"HEAD",
                    extra_headers=[(EXPLAIN_HEADER, exchange.explain)]
                    if exchange.explain
                    else None,
                ),
                close=close,
                status=404,
                cause=responses.NO_ROUTE,
            )
            return exchange
        action = route.action  # None for every route without a rewrite or redirect
        if action is not None and isinstance(action, Redirect):
            # Answered before the policies: a redirect forwards nothing they would guard.
            exchange.route_name = route.name  # counted and logged under its route
            self._answer(exchange, action.answer(authority.decode("latin-1"), path, query),
                         has_body, keep_alive, method)  # fmt: skip
            return exchange
        chain = snapshot.chains[route.index]
        drop = _NO_DROP
        if chain is not None:
            outcome = chain.apply(exchange, self.stats)
            if type(outcome) is not bytes:  # answered, or a verdict pending
                exchange.route_name = route.name  # counted and logged under its route
                if isinstance(outcome, LocalAnswer):
                    exchange.service = route.target
                    self._answer(exchange, outcome, has_body, keep_alive, method)
                else:
                    assert isinstance(outcome, PendingChain)
                    forward = functools.partial(self._forward, exchange, route, action, fields,
                                                chain.drop, url, path_text, question,
                                                absolute_authority, authority, transfer_encoding,
                                                upgrade, has_body)  # fmt: skip
                    self._await_policies(exchange, outcome, route, has_body,
                                         transfer_encoding is not None, extra, forward)  # fmt: skip
                return exchange
            extra += outcome
            drop = chain.drop
        self._forward(exchange, route, action, fields, drop, url, path_text, question,
                      absolute_authority, authority, transfer_encoding, upgrade, has_body, extra)  # fmt: skip
        return exchange

    def _forward(
        self,
        exchange: Exchange,
        route: CompiledRoute[Service],
        action: Rewrite | None,
        fields: RequestFields,
        drop: frozenset[bytes],
        url: bytes,
        path_text: str,
        question: bytes,
        absolute_authority: bytes | None,
        authority: bytes,
        transfer_encoding: bytes | None,
        upgrade: bytes | None,
        has_body: bool,
        extra: bytes,
    ) -> None:
        """The request's way on once its policies admitted it: target, rewrite, upstream head."""
        if drop:
            fields.lines = [
                line for line in fields.lines if line.split(b":", 1)[0].lower() not in drop
            ]
        path, query = exchange.path, exchange.query
        if path is path_text and absolute_authority is None and (query or not question):
            upstream_target = url  # unchanged by normalization: the bytes as received
        elif query:
            upstream_target = (path + "?" + query).encode("ascii")
        else:
            upstream_target = path.encode("ascii")
        sent_authority = authority
        if action is not None:  # a rewrite: after the policies, which judged the client's request
            try:
                upstream_target = action.target(path, query)
            except ValueError as exc:
                exchange.route_name = route.name
                exchange.service = route.target
                failed = LocalAnswer(500, f"rewritten path is invalid: {exc}", REWRITE_FAILED)
                self._answer(exchange, failed, has_body, exchange.keep_alive, exchange.verb)
                return
            if action.host is not None:
                sent_authority = action.host
        chunked = transfer_encoding is not None
        if upgrade is not None:  # the one hop-by-hop pair forwarded (RFC 9110 §7.8)
            extra += b"connection: upgrade\r\nupgrade: %s\r\n" % upgrade
        exchange.request_chunked = chunked
        exchange.route_to(
            route.target,  # type: ignore[arg-type]  # None only on redirect routes, answered above
            route.name,
            upstream_target,
            sent_authority,
            fields.upstream_lines(self.info, authority, exchange.rid, chunked, extra),
        )

    def _await_policies(
        self,
        exchange: Exchange,
        verdict: PendingChain,
        route: CompiledRoute[Service],
        has_body: bool,
        chunked: bool,
        extra: bytes,
        forward: Callable[[bytes], None],
    ) -> None:
        """Leave ``exchange`` unstarted until its policies decide, then answer or forward it."""
        service = route.target
        assert service is not None  # redirect routes were answered before the policies
        # Body bytes may come meanwhile: framed and kept for a retry as route_to would have it.
        exchange.request_chunked = chunked
        exchange.replay_limit = service.replay_limit
        waits = self.policy_waits
        if waits is None:
            waits = self.policy_waits = set()
        waits.add(verdict)

        def decided(outcome: LocalAnswer | bytes) -> None:
            waits.discard(verdict)
            if exchange.finished or exchange.local is not None or self.closed:
                return  # answered or gone meanwhile (a protocol error, a timeout, a disconnect)
            try:
                if isinstance(outcome, LocalAnswer):
                    exchange.service = service
                    self._answer(exchange, outcome, has_body, exchange.keep_alive, exchange.verb)
                else:
                    forward(extra + outcome)
            except Exception:  # never a trace to the client, never a request left hanging
                log.exception("dispatching %s after its policies failed", exchange.request_id)
                exchange.service = service
                failed = LocalAnswer(503, "the request could not be dispatched", UNAVAILABLE_CAUSE)
                self._answer(exchange, failed, has_body, exchange.keep_alive, exchange.verb)
            queue = self.queue
            if queue and queue[0] is exchange:
                exchange.start()

        verdict.then(decided)

    def _has_body(self) -> bool:
        """Whether the head being completed announces a body (read only for upgrades)."""
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"transfer-encoding" or (lower == b"content-length" and value != b"0"):
                return True
        return False

    def _answer(
        self,
        exchange: Exchange,
        answer: LocalAnswer,
        has_body: bool,
        keep_alive: bool,
        method: bytes,
    ) -> None:
        close = has_body or not keep_alive or self.ctx.draining
        exchange.answer_locally(
            responses.local_response(
                answer.status,
                answer.detail,
                exchange.rid,
                cause=answer.cause,
                close=close,
                head_only=method == b"HEAD",
                extra_headers=answer.headers,
                body=answer.body,
            ),
            close=close,
            status=answer.status,
            cause=answer.cause,
        )

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

    def _protocol_error(self, error: HttpError) -> None:
        """Answer ``error`` after the responses already owed, then close; parse nothing more."""
        self.broken = True
        self.in_head = False
        if not self.closed:
            self.transport.pause_reading()
        exchange = self.parsing
        if exchange is not None and not exchange.finished and exchange in self.queue:
            # The error concerns a request whose head was accepted (e.g. its body is too large).
            if exchange is self.queue[0]:
                exchange.request_done = False  # forces connection: close
                exchange.fail(error.status, error.detail, error.cause)
            else:
                exchange.answer_locally(
                    self._error_response(error, exchange.rid),
                    True,
                    status=error.status,
                    cause=error.cause,
                )
            return
        request_id = new_request_id()
        response = self._error_response(error, request_id)
        self._account_error(error, request_id, len(response))
        if self.queue:
            self.final_error = response
        else:
            self.send(response)
            self.close()

    def _account_error(self, error: HttpError, request_id: bytes, size: int) -> None:
        """A request that never became an exchange still counts, and is logged."""
        self.stats.record("", "", "", error.status, 0.0, -1.0, 0, size, error.cause)
        if self.access_log is not None:
            now = time.monotonic()
            self.access_log.add(
                Entry(
                    now,
                    now,
                    0.0,
                    0.0,
                    0.0,
                    None,
                    "1.1",
                    error.status,
                    0,
                    size,
                    "",
                    "",
                    "",
                    0,
                    error.cause.decode("ascii"),
                    self.client_ip,
                    request_id.decode("ascii"),
                )
            )

    def _error_response(self, error: HttpError, request_id: bytes) -> bytes:
        return responses.local_response(
            error.status,
            error.detail,
            request_id,
            cause=error.cause,
            close=True,
            extra_headers=list(error.headers),
        )


def _explain_header(route: str | None, trace: list[TraceStep]) -> bytes:
    """A one-line summary of the routing decision, safe to put in a header."""
    parts = [f"matched={route or '-'}"]
    for step in trace:
        if step.outcome != "matched":
            parts.append(f"lost {step.route}: {step.reason}")
    text = "; ".join(parts)
    cleaned = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return cleaned[:4000].encode("ascii")
