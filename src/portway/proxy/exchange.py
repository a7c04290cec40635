"""One request and its response through the gateway: pick, connect, relay, retry, finish.

Theory of operation. The client connection parses a request head, routes it and creates an
``Exchange``. Exchanges of one client connection run strictly one after another (pipelined requests
wait their turn, so responses go out in order). ``start`` checks the service's circuit breaker and
makes the first *try*: pick an instance, take an idle upstream connection or open one (or wait for
one when the service is at ``max_connections``), send the head plus any body bytes received so far.
Request body bytes stream to the upstream as they arrive; response bytes stream to the client as
they arrive, each direction with one coalesced write per read and flow control both ways. No Task,
Future or timer exists per request unless a connection must be opened or a retry waits.

Failure rules. A connect failure (nothing was sent) moves on to another instance, ``connect_retries``
times. A reused idle connection that dies before any response byte is replayed once on a fresh one
(an idempotent request whose body was kept). A reset, a timeout before the response head, or a
status in ``retries.on_statuses`` is retried on another instance after a jittered back-off when
the method is idempotent (or the service opts in), the body was kept (``buffer_limit``), attempts
remain and the retry budget allows. Nothing is retried once the first response byte went to the
client: from then on a failure can only end the client connection. Each outcome is reported to the
service's outlier detector.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from portway.balancing import Endpoint
from portway.messages import NO_OVERRIDES, Request
from portway.observability.trace_context import Propagator, TraceContext
from portway.proxy import response_head, responses
from portway.proxy.accounting import account
from portway.proxy.client import ClientEnd
from portway.proxy.service import Service
from portway.upstream.connection import ResponseSink, UpstreamConnection
from portway.upstream.forward import HOP_BY_HOP

# The usual methods as shared strings (no decode; their hash is computed once).
_METHODS: Final = {
    m.encode("ascii"): m
    for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")
}
_IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
# Client bytes buffered while no upstream connection is ready before the client is paused.
PENDING_HIGH_WATER: Final = 256 * 1024
PAUSE_PENDING: Final = 1
PAUSE_UPSTREAM: Final = 2


class Exchange(Request, ResponseSink):
    """One request from head to end. It *is* the ``Request`` routing and balancing see (one object
    per request instead of two); ``verb`` and ``rid`` are the method and request id as bytes, as
    they go on the wire."""

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
        # For the access log, "" when absent: set by the client side from its one header scan.
        self.user_agent = ""
        self.referer = ""

    @property
    def request(self) -> Request:
        """What routing and balancing see: this exchange itself."""
        return self

    @property
    def idempotent(self) -> bool:
        return self.verb in _IDEMPOTENT

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

    # -- dispatch --------------------------------------------------------------------------------

    def start(self) -> None:
        """This exchange is the connection's current one: answer it or send it upstream."""
        if self.local is not None:
            self._write_local(self.local, self.close_after)
            return
        service = self.service
        if service is None:
            return  # its policies' verdict is pending: the client side starts it once known
        if service.max_requests and service.active_requests >= service.max_requests:
            self.fail(
                503,
                f"service '{service.name}' is at its limit of {service.max_requests} "
                "requests in flight",
                responses.OVERFLOW_REQUESTS,
            )
            return
        service.active_requests += 1
        self.counted = True
        if service.request_timeout:
            sweeper = self.client.sweeper
            self.request_deadline = self.deadline = sweeper.now + service.request_timeout
            self.in_sweeper = True
            sweeper.add(self)
        self._try()

    def _try(self) -> None:
        """Pick an instance and get a connection to it."""
        self.retry_handle = None
        if self.finished:
            return
        service = self.service
        assert service is not None
        endpoint = service.pick(self, self.tried)
        if endpoint is None and self.attempt:
            endpoint = service.pick(self, ())  # a retry may return to a tried instance
        if endpoint is None:
            unavailable = service.config.unavailable
            if unavailable is not None and not service.endpoints:
                self.fail(503, unavailable, responses.BACKEND_NOT_FOUND)
            else:
                self.fail(
                    503,
                    f"no healthy instance of service '{service.name}'",
                    responses.NO_HEALTHY_INSTANCE,
                )
            return
        self.endpoint = endpoint
        endpoint.active += 1
        trace = self.trace
        if trace.recording:
            trace.begin_try(endpoint.address, _monotonic())
        upstream = service.pools[endpoint.index].acquire()
        if upstream is not None:
            self._bind(upstream)
        elif not self._open(service, endpoint):
            if service.max_pending and len(service.waiting) < service.max_pending:
                self.waiting = True
                service.waiting.append(self)
                sweeper = self.client.sweeper
                wait_end = sweeper.now + service.connect_timeout
                self.deadline = min(wait_end, self.request_deadline or wait_end)
                self.in_sweeper = True
                sweeper.add(self)
            else:
                self.fail(
                    503,
                    f"service '{service.name}' is at its limit of "
                    f"{service.max_connections} connections",
                    responses.OVERFLOW_CONNECTIONS,
                )

    def _acquire(self) -> bool:
        """Bind an idle connection or start opening one; False when the breaker allows neither."""
        service = self.service
        endpoint = self.endpoint
        assert service is not None and endpoint is not None
        upstream = service.pools[endpoint.index].acquire()
        if upstream is not None:
            self._bind(upstream)
            return True
        return self._open(service, endpoint)

    def _open(self, service: Service, endpoint: Endpoint) -> bool:
        """Start opening a connection to ``endpoint``; False when the breaker does not allow it."""
        if not service.may_open_connection():
            return False
        service.open_connections += 1  # counted from the start of the connect
        self.connect_task = self.client.loop.create_task(self._connect(endpoint))
        return True

    def resume_from_wait(self) -> bool:
        """A connection came free: try again. False (stay queued) when there is still no room."""
        if self.finished:
            return True
        if not self._acquire():
            return False
        self.waiting = False
        self.deadline = self.request_deadline
        return True

    async def _connect(self, endpoint: Endpoint) -> None:
        service = self.service
        assert service is not None
        pool = service.pools[endpoint.index]
        began = _monotonic()
        try:
            upstream = await pool.connect(service.connect_timeout)
        except (OSError, TimeoutError) as exc:
            self.connect_task = None
            service.connection_closed()
            if not self.finished:
                self._connect_failed(endpoint, exc)
            return
        except asyncio.CancelledError:
            service.connection_closed()
            return
        self.connect_task = None
        self.t_connect = _monotonic() - began
        if self.finished:  # the client went away meanwhile: keep the connection for others
            pool.release(upstream)
            return
        self._bind(upstream)

    def _connect_failed(self, endpoint: Endpoint, exc: BaseException) -> None:
        service = self.service
        assert service is not None
        self.trace.end_try(_monotonic(), error="connect")
        service.failed(endpoint, "connect")
        self._leave_endpoint()
        self.tried += (endpoint,)
        self.connect_failures += 1
        if self.connect_failures <= service.connect_retries:
            nxt = service.pick(self, self.tried)
            if nxt is not None:
                self.endpoint = nxt
                nxt.active += 1
                self.trace.begin_try(nxt.address, _monotonic())
                if not self._acquire():
                    self.fail(
                        503,
                        f"service '{service.name}' is at its limit of "
                        f"{service.max_connections} connections",
                        responses.OVERFLOW_CONNECTIONS,
                    )
                return
        if isinstance(exc, TimeoutError):
            self.fail(
                504,
                f"no instance of service '{service.name}' accepted a connection in time",
                responses.UPSTREAM_TIMEOUT,
            )
        else:
            self.fail(
                502,
                f"could not connect to service '{service.name}' ({_describe(exc)})",
                responses.UPSTREAM_REFUSED,
            )

    def _bind(self, upstream: UpstreamConnection) -> None:
        """Send the request head (and the body bytes received so far) on ``upstream``."""
        service = self.service
        endpoint = self.endpoint
        assert service is not None and endpoint is not None
        self.upstream = upstream
        trace = self.trace
        # One join: request line, host, trace context, the client's and the forwarding headers.
        parts = [
            self.verb,
            b" ",
            self.target,
            b" HTTP/1.1\r\nhost: ",
            service.host_header(endpoint) if service.rewrite_host else self.authority,
            b"\r\ntraceparent: 00-",
            trace.trace_id,
            b"-",
            trace.try_id,
            b"-",
            trace.flags,
            b"\r\n",
        ]
        if trace.tracestate is not None:
            parts += (b"tracestate: ", trace.tracestate, b"\r\n")
        parts.append(self.headers_rest)
        pending = self.pending
        if pending:
            parts += pending
            pending.clear()
            self.pending_bytes = 0
        client = self.client
        if client.paused:
            client.pause_reading(PAUSE_PENDING, False)
        if not self.t_sent:
            self.t_sent = _monotonic()
        upstream.bind(self, b"".join(parts), service.first_byte_timeout)
        if client.write_paused:  # the client is still behind on an earlier response
            self.client_write_paused(True)

    def _leave_endpoint(self) -> None:
        endpoint, self.endpoint = self.endpoint, None
        if endpoint is not None:
            endpoint.active -= 1

    # -- retries ---------------------------------------------------------------------------------

    def _may_retry(self) -> bool:
        service = self.service
        assert service is not None
        retry = service.retry
        return (
            self.attempt < retry.attempts
            and not self.started
            and self.request_done
            and self.replay is not None
            and (self.verb in _IDEMPOTENT or retry.non_idempotent)
            and (self.retrying or service.retry_allowed())
        )

    def _retry(self, connection: UpstreamConnection) -> None:
        """Abandon this try (its connection cannot be reused) and try again after a back-off."""
        service = self.service
        endpoint = self.endpoint
        assert service is not None and endpoint is not None and self.replay is not None
        self.upstream = None
        connection.close()
        self._leave_endpoint()
        self.tried += (endpoint,)
        self.attempt += 1
        if not self.retrying:
            self.retrying = True
            service.active_retries += 1
        self.client.stats.retried(service.name)
        self.out.clear()
        self.trailers = None
        self.pending = list(self.replay)
        self.pending_bytes = sum(len(chunk) for chunk in self.pending)
        retry = service.retry
        ceiling = min(retry.backoff_max, retry.backoff_base * 2 ** (self.attempt - 1))
        delay = service.rng.uniform(0, ceiling)  # full jitter: retries of many clients spread out
        self.retry_handle = self.client.loop.call_later(delay, self._try)

    # -- response side (called by the upstream connection) ----------------------------------------

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        if status < 200:
            if not self.http10:  # HTTP/1.0 clients do not understand interim responses
                self.out.append(b"HTTP/1.1 %d %s\r\n\r\n" % (status, reason))
            return
        service = self.service
        endpoint = self.endpoint
        assert service is not None and endpoint is not None
        now = _monotonic()
        if self.trace.recording:
            self.trace.end_try(now, status=status)
        if status >= 500:
            service.failed(endpoint, "5xx")
            upstream = self.upstream
            if status in service.retry_statuses and upstream is not None and self._may_retry():
                self._retry(upstream)
                return
        else:
            service.outlier.success(endpoint)
        self.status = status
        self.t_first_byte = now
        framing = response_head.build_into(
            self.out,
            status,
            reason,
            headers,
            self.rid,
            self.response_headers,
            self.explain,
            head_request=self.head_request,
            http10=self.http10,
            close=not self.request_done or not self.keep_alive or self.client.draining,
            overrides=self.response_overrides,
        )
        self.framing = framing
        self.close_after = framing.close
        self.started = True
        if service.try_timeout:
            upstream = self.upstream
            if upstream is not None:
                upstream.deadline = self.client.sweeper.now + service.read_timeout

    def response_body(self, data: bytes) -> None:
        if self.framing.chunked:
            self.out.append(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.out.append(data)

    def response_trailer(self, name: bytes, value: bytes) -> None:
        if self.trailers is None:
            self.trailers = []
        if name.lower() not in HOP_BY_HOP:
            self.trailers.append(b"%s: %s\r\n" % (name, value))

    def response_complete(self) -> None:
        if self.framing.chunked:
            trailers = self.trailers
            self.out.append(b"0\r\n%s\r\n" % b"".join(trailers) if trailers else b"0\r\n\r\n")
        self.complete = True

    def response_flush(self, connection: UpstreamConnection) -> None:
        if connection is not self.upstream:
            return  # a try abandoned for a retry
        out = self.out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self.bytes_out += len(data)
            self.client.send(data)
        if self.complete:
            if self.finished:
                return
            service = self.service
            endpoint = self.endpoint
            assert service is not None and endpoint is not None
            self.upstream = None
            if connection.keep_alive and self.request_done and not self.pending:
                service.pools[endpoint.index].release(connection)
            else:
                connection.close()
            self._finish(self.close_after)
        elif self.started and self.service is not None:
            connection.deadline = self.client.sweeper.now + self.service.read_timeout

    def upstream_lost(self, connection: UpstreamConnection, error: str) -> None:
        if self.finished or connection is not self.upstream:
            return
        self.upstream = None
        if self.started and self.framing.until_close:
            # Read-until-close framing (RFC 9112 §6.3 rule 8): the close is the end of the body.
            self.response_complete()
            self._flush_out()
            self._finish(self.close_after)
            return
        if self.started:
            self._flush_out()
            self._abort_client()
            return
        service = self.service
        endpoint = self.endpoint
        assert service is not None and endpoint is not None
        if (
            connection.reused
            and connection.bytes_received == 0
            and self.replay is not None
            and self.request_done
            and not self.replayed
            and (self.verb in _IDEMPOTENT or service.retry.non_idempotent)
        ):
            # A stale keep-alive connection: the request never reached an application. Replay it
            # once on a fresh connection; the instance did nothing wrong.
            self.pending = list(self.replay)
            self.pending_bytes = sum(len(c) for c in self.pending)
            self.replayed = True  # the body stays kept: a retry elsewhere may still need it
            service.open_connections += 1
            self.connect_task = self.client.loop.create_task(self._connect(endpoint))
            return
        self.trace.end_try(_monotonic(), error="reset")
        service.failed(endpoint, "reset")
        if self._may_retry():
            self._retry(connection)
            return
        self.fail(
            502,
            f"service '{service.name}': {error} before a complete response",
            responses.UPSTREAM_RESET if "closed" in error else responses.UPSTREAM_BAD_RESPONSE,
        )

    def upstream_timeout(self, connection: UpstreamConnection) -> None:
        if connection is not self.upstream:
            connection.close()
            return
        if self.started:
            self.upstream = None
            connection.close()
            self._flush_out()
            self._abort_client()
            return
        service = self.service
        endpoint = self.endpoint
        assert service is not None and endpoint is not None
        self.trace.end_try(_monotonic(), error="timeout")
        service.failed(endpoint, "timeout")
        if self._may_retry():
            self._retry(connection)
            return
        self.upstream = None
        connection.close()
        self.fail(
            504, f"service '{service.name}' did not answer in time", responses.UPSTREAM_TIMEOUT
        )

    def upstream_write_paused(self, paused: bool) -> None:
        self.client.pause_reading(PAUSE_UPSTREAM, paused)

    def response_upgraded(self, connection: UpstreamConnection, rest: bytes) -> bool:
        """The upstream switched protocols; only a WebSocket handshake's ``UpgradeExchange``
        (proxy/upgrade.py) accepts it: for any other request it is an invalid response."""
        return False

    def client_write_paused(self, paused: bool) -> None:
        upstream = self.upstream
        if upstream is not None and not upstream.closed:
            if paused:
                upstream.pause_reading()
                upstream.deadline = 0.0  # we stopped reading: the upstream is not slow
            else:
                upstream.resume_reading()
                if self.service is not None:
                    upstream.deadline = self.client.sweeper.now + self.service.read_timeout

    def on_deadline(self) -> None:
        """The sweeper: the request timeout passed, or a wait for a connection did."""
        if self.finished:
            return
        service = self.service
        assert service is not None
        now = self.client.sweeper.now
        if self.waiting and (not self.request_deadline or now < self.request_deadline):
            self.fail(
                503,
                f"no connection to service '{service.name}' came free within "
                f"{service.connect_timeout:g}s",
                responses.OVERFLOW_PENDING,
            )
            return
        if self.started:
            self._flush_out()
            self._abort_client()
            return
        self.fail(
            504,
            f"service '{service.name}': the request took longer than {service.request_timeout:g}s",
            responses.UPSTREAM_TIMEOUT,
        )

    # -- endings ---------------------------------------------------------------------------------

    def fail(self, status: int, detail: str, cause: bytes) -> None:
        """Answer an error if the response has not started, else cut the client connection."""
        if self.finished:
            return
        if self.started:
            self._abort_client()
            return
        close = not self.request_done or not self.keep_alive or self.client.draining
        self.status = status
        self.cause = cause
        self._write_local(
            responses.local_response(
                status,
                detail,
                self.rid,
                cause=cause,
                close=close,
                head_only=self.head_request,
            ),
            close,
        )

    def _write_local(self, response: bytes, close: bool) -> None:
        self.started = self.complete = True
        self.bytes_out += len(response)
        self.client.send(response)
        self._finish(close or not self.request_done)

    def _flush_out(self) -> None:
        if self.out:
            data = b"".join(self.out)
            self.bytes_out += len(data)
            self.client.send(data)
            self.out.clear()

    def _abort_client(self) -> None:
        self._finish(True)
        self.client.abort()

    def _release(self) -> None:
        """Give back everything this exchange holds: counters, endpoint, connection, timers."""
        self.finished = True
        account(self)
        service = self.service
        if service is not None:
            if self.counted:
                service.active_requests -= 1
            if self.retrying:
                service.active_retries -= 1
            if self.waiting:
                self.waiting = False
                if self in service.waiting:
                    service.waiting.remove(self)
        if self.retry_handle is not None:
            self.retry_handle.cancel()
            self.retry_handle = None
        if self.in_sweeper:
            self.client.sweeper.discard(self)
        endpoint = self.endpoint
        if endpoint is not None:
            self.endpoint = None
            endpoint.active -= 1
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.close()

    def _finish(self, close: bool) -> None:
        if self.finished:
            return
        client = self.client
        if client.paused & (PAUSE_PENDING | PAUSE_UPSTREAM):
            # This exchange's reasons to hold the client back end with it: a full upstream write
            # buffer reports resume_writing to nobody once the connection went back to the pool.
            client.pause_reading(PAUSE_PENDING | PAUSE_UPSTREAM, False)
        self._release()
        client.exchange_finished(self, close)

    def client_lost(self) -> None:
        """The client connection closed: nothing more can be sent; free what this exchange holds."""
        if not self.finished:
            self._release()


_NO_FRAMING: Final = response_head.NO_FRAMING
_NO_TRACE: Final = Propagator().start(None, None)  # a placeholder for local answers made before one
_monotonic: Final = time.monotonic


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__
