"""What one exchange holds, and its request side.

``ExchangeState`` is the base of ``Exchange`` (proxy/exchange.py): the request itself, every field
the exchange keeps from head to end, its set-up by the client side, and the request body. Body bytes
stream to the upstream as they arrive, one coalesced write per client read; while no upstream
connection is bound they wait in ``pending`` (the client is paused past ``PENDING_HIGH_WATER``), and
a copy is kept for a retry while the body is at most the service's ``replay_limit``.

Apart from ``Exchange`` to keep each file readable. The constructor stays with the fields it sets:
mypyc then knows each one is always set, and reads it without a check.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from portway.balancing import Endpoint
from portway.messages import NO_OVERRIDES, Request
from portway.observability.trace_context import TraceContext
from portway.proxy import response_head
from portway.proxy.client import ClientEnd
from portway.proxy.service import Service
from portway.upstream.connection import ResponseSink, UpstreamConnection

# The usual methods as shared strings (no decode; their hash is computed once).
_METHODS: Final = {
    m.encode("ascii"): m
    for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")
}
IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
# Client bytes buffered while no upstream connection is ready before the client is paused.
PENDING_HIGH_WATER: Final = 256 * 1024
PAUSE_PENDING: Final = 1
PAUSE_UPSTREAM: Final = 2
_NO_FRAMING: Final = response_head.NO_FRAMING
_monotonic: Final = time.monotonic


class ExchangeState(Request, ResponseSink):
    """One request from head to end, as data. It *is* the ``Request`` routing and balancing see
    (one object per request instead of two); ``verb`` and ``rid`` are the method and request id as
    bytes, as they go on the wire. ``Exchange`` adds what it does."""

    __slots__ = (
        "attempt",
        "authority",
        "body_received",
        "bytes_out",
        "cause",
        "client",
        "close_after",
        "complete",
        "connect_failures",
        "connect_task",
        "counted",
        "deadline",
        "endpoint",
        "explain",
        "finished",
        "framing",
        "head_request",
        "headers_rest",
        "http10",
        "in_sweeper",
        "keep_alive",
        "local",
        "max_body",
        "out",
        "pending",
        "pending_bytes",
        "referer",
        "replay",
        "replay_limit",
        "replayed",
        "request_chunked",
        "request_deadline",
        "request_done",
        "retry_handle",
        "retrying",
        "rid",
        "route_name",
        "service",
        "started",
        "status",
        "t_connect",
        "t_first_byte",
        "t_sent",
        "t_start",
        "target",
        "trace",
        "trailers",
        "tried",
        "upstream",
        "user_agent",
        "verb",
        "waiting",
    )

    def __init__(
        self,
        client: ClientEnd,
        verb: bytes,
        host: str,
        path: str,
        query: str,
        headers: list[tuple[bytes, bytes]],
        client_ip: str,
        rid: bytes,
        trace: TraceContext,
        *,
        keep_alive: bool,
        http10: bool,
        max_body: int,
    ) -> None:
        # The Request part (see portway.messages), set here rather than through its __init__.
        method = _METHODS.get(verb)
        self.method = method if method is not None else verb.decode("ascii")
        self.host = host
        self.path = path
        self.query = query
        self.headers = headers
        self.client_ip = client_ip
        self.request_id = rid.decode("ascii")
        self.consumer = ""
        self.response_headers = []
        self.response_overrides = NO_OVERRIDES
        self._header_map = None
        self._cookies = None
        self._query_params = None
        # The exchange.
        self.t_start = _monotonic()
        self.t_sent = self.t_first_byte = self.t_connect = 0.0
        self.status = 0
        self.cause: bytes | None = None
        self.bytes_out = 0
        self.trace = trace
        self.client = client
        self.verb = verb
        self.rid = rid
        self.head_request = verb == b"HEAD"
        self.keep_alive = keep_alive
        self.http10 = http10
        self.max_body = max_body
        self.service: Service | None = None
        self.route_name = ""
        self.target = b""
        self.authority = b""
        self.headers_rest = b""
        self.request_chunked = False
        self.request_done = False
        self.body_received = 0
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.replay: list[bytes] | None = []  # body chunks kept for a retry, while small enough
        self.replay_limit = 0
        self.replayed = False  # the one free replay after a stale keep-alive connection is used
        self.local: bytes | None = None
        self.explain: bytes | None = None
        self.endpoint: Endpoint | None = None
        self.tried: tuple[Endpoint, ...] = ()
        self.attempt = 0  # retries made after resets, timeouts and retryable statuses
        self.connect_failures = 0
        self.upstream: UpstreamConnection | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.retry_handle: asyncio.TimerHandle | None = None
        self.counted = False  # in the service's requests in flight
        self.retrying = False  # in the service's retries in flight
        self.waiting = False  # queued for a connection (circuit breaker)
        self.deadline = 0.0  # sweeper deadline: request timeout, or the end of a wait
        self.in_sweeper = False
        self.request_deadline = 0.0
        self.started = False  # response head written to the client
        self.complete = False  # response fully written to the client
        self.finished = False
        self.close_after = False
        self.framing = _NO_FRAMING
        self.out: list[bytes] = []
        self.trailers: list[bytes] | None = None
        # For the access log, as received (b"" when absent): set by the client side from its one
        # header scan, decoded only if the log has not seen the value yet.
        self.user_agent = b""
        self.referer = b""

    @property
    def request(self) -> Request:
        """What routing and balancing see: this exchange itself."""
        return self

    @property
    def idempotent(self) -> bool:
        return self.verb in IDEMPOTENT

    # -- set-up by the client side ---------------------------------------------------------------

    def route_to(
        self,
        service: Service,
        route_name: str,
        target: bytes,
        authority: bytes,
        headers_rest: bytes,
    ) -> None:
        self.service = service
        self.route_name = route_name
        self.target = target
        self.authority = authority
        self.headers_rest = headers_rest
        self.replay_limit = service.replay_limit

    def answer_locally(
        self, response: bytes, close: bool, *, status: int, cause: bytes | None
    ) -> None:
        self.local = response
        self.close_after = close
        self.status = status
        self.cause = cause

    # -- request side ----------------------------------------------------------------------------

    def request_body(self, data: bytes) -> bool:
        """Body bytes from the client; False when the body exceeds its limit (413)."""
        size = len(data)
        self.body_received += size
        if self.max_body and self.body_received > self.max_body:
            return False
        if self.local is not None:  # answered locally: the body is read and dropped
            return True
        chunk = b"%x\r\n%s\r\n" % (size, data) if self.request_chunked else data
        self.pending.append(chunk)
        self.pending_bytes += len(chunk)
        replay = self.replay
        if replay is not None:
            if self.body_received <= self.replay_limit:
                replay.append(chunk)
            else:
                self.replay = None
        return True

    def request_end(self, trailers: list[bytes] | None) -> None:
        self.request_done = True
        if self.request_chunked and self.local is None:
            end = b"0\r\n%s\r\n" % b"".join(trailers) if trailers else b"0\r\n\r\n"
            self.pending.append(end)
            self.pending_bytes += len(end)
            if self.replay is not None:
                self.replay.append(end)

    def flush_request(self) -> None:
        """Send buffered body bytes if an upstream connection is bound, else pause when too many."""
        upstream = self.upstream
        pending = self.pending
        if upstream is not None:
            if pending:
                upstream.send(pending[0] if len(pending) == 1 else b"".join(pending))
                pending.clear()
                self.pending_bytes = 0
        elif self.pending_bytes > PENDING_HIGH_WATER:
            self.client.pause_reading(PAUSE_PENDING, True)
