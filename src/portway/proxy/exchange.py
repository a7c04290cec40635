"""One request and its response through the gateway: pick, connect, relay, finish.

Theory of operation. The client connection parses a request head, routes it and creates an
``Exchange``. Exchanges of one client connection run strictly one after another (pipelined requests
wait their turn, so responses go out in order). ``start`` picks an instance, takes an idle upstream
connection or opens one, and sends the head plus any body bytes received so far. Request body bytes
stream to the upstream as they arrive; response bytes stream to the client as they arrive, each
direction with one coalesced write per read and flow control both ways. No Task, Future or timer
exists per request unless a new upstream connection must be opened.

Failure rules: a connect failure (nothing was sent) moves on to another instance; a reused idle
connection that dies before any response byte is replayed once on a fresh one when the request is
idempotent and its body was kept; anything after the first response byte reached the client can only
end the client connection, because the status line is already gone.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from portway.balancing import Endpoint
from portway.messages import Request
from portway.proxy import responses
from portway.proxy.service import CONNECT_FAILURE_BACKOFF, Service
from portway.upstream.connection import UpstreamConnection
from portway.upstream.forward import HOP_BY_HOP, REQUEST_ID_HEADER, connection_tokens

if TYPE_CHECKING:
    from portway.proxy.client import ClientSide

_RESPONSE_DROP = HOP_BY_HOP | {REQUEST_ID_HEADER}
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
# Request bodies up to this size are kept so an idempotent request can be replayed after a stale
# keep-alive connection fails; larger bodies stream without a copy and are not replayed.
REPLAY_LIMIT = 64 * 1024
# Client bytes buffered while no upstream connection is ready before the client is paused.
PENDING_HIGH_WATER = 256 * 1024
PAUSE_PENDING = 1
PAUSE_UPSTREAM = 2


class Exchange:
    __slots__ = (
        "authority",
        "body_received",
        "client",
        "close_after",
        "complete",
        "connect_task",
        "endpoint",
        "explain",
        "finished",
        "head_request",
        "headers_rest",
        "http10",
        "keep_alive",
        "local",
        "max_body",
        "method",
        "out",
        "pending",
        "pending_bytes",
        "replay",
        "request",
        "request_chunked",
        "request_done",
        "request_id",
        "response_chunked",
        "response_no_body",
        "route_name",
        "service",
        "started",
        "target",
        "trailers",
        "tried",
        "until_close",
        "upstream",
    )

    def __init__(
        self,
        client: ClientSide,
        request: Request,
        request_id: bytes,
        method: bytes,
        *,
        keep_alive: bool,
        http10: bool,
        max_body: int,
    ) -> None:
        self.client = client
        self.request = request
        self.request_id = request_id
        self.method = method
        self.head_request = method == b"HEAD"
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
        self.replay: list[bytes] | None = [] if method in _IDEMPOTENT else None
        self.local: bytes | None = None
        self.explain: bytes | None = None
        self.endpoint: Endpoint | None = None
        self.tried: list[Endpoint] = []
        self.upstream: UpstreamConnection | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.started = False  # response head written to the client
        self.complete = False  # response fully written to the client
        self.finished = False
        self.close_after = False
        self.response_chunked = False
        self.response_no_body = False
        self.until_close = False  # the upstream frames its body by closing (RFC 9112 §6.3 rule 8)
        self.out: list[bytes] = []
        self.trailers: list[bytes] | None = None

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

    def answer_locally(self, response: bytes, close: bool) -> None:
        self.local = response
        self.close_after = close

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
            if self.pending_bytes <= REPLAY_LIMIT and self.body_received <= REPLAY_LIMIT:
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
                upstream.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
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
        assert service is not None
        endpoint = service.balancer.pick(self.request, self.tried)
        if endpoint is None:
            self.fail(
                503,
                f"no healthy instance of service '{service.name}'",
                responses.NO_HEALTHY_INSTANCE,
            )
            return
        self.endpoint = endpoint
        endpoint.active += 1
        pool = service.pools[endpoint.index]
        upstream = pool.acquire()
        if upstream is not None:
            self._bind(upstream)
        else:
            self.connect_task = self.client.loop.create_task(self._connect(endpoint))

    async def _connect(self, endpoint: Endpoint) -> None:
        service = self.service
        assert service is not None
        pool = service.pools[endpoint.index]
        try:
            upstream = await pool.connect(service.connect_timeout)
        except (OSError, TimeoutError) as exc:
            self.connect_task = None
            if not self.finished:
                self._connect_failed(endpoint, exc)
            return
        except asyncio.CancelledError:
            return
        self.connect_task = None
        if self.finished:  # the client went away meanwhile: keep the connection for others
            pool.release(upstream)
            return
        self._bind(upstream)

    def _connect_failed(self, endpoint: Endpoint, exc: BaseException) -> None:
        service = self.service
        assert service is not None
        self._leave_endpoint()
        endpoint.mark_down(CONNECT_FAILURE_BACKOFF)
        self.tried.append(endpoint)
        if len(self.tried) <= service.connect_retries:
            nxt = service.balancer.pick(self.request, self.tried)
            if nxt is not None:
                self.endpoint = nxt
                nxt.active += 1
                upstream = service.pools[nxt.index].acquire()
                if upstream is not None:
                    self._bind(upstream)
                else:
                    self.connect_task = self.client.loop.create_task(self._connect(nxt))
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
        service = self.service
        endpoint = self.endpoint
        assert service is not None and endpoint is not None
        self.upstream = upstream
        host = service.host_header(endpoint) if service.rewrite_host else self.authority
        parts = [
            b"%s %s HTTP/1.1\r\nhost: %s\r\n%s"
            % (self.method, self.target, host, self.headers_rest)
        ]
        parts.extend(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        client = self.client
        if client.paused:
            client.pause_reading(PAUSE_PENDING, False)
        upstream.bind(self, b"".join(parts), service.read_timeout)
        if client.write_paused:  # the client is still behind on an earlier response
            self.client_write_paused(True)

    def _leave_endpoint(self) -> None:
        endpoint, self.endpoint = self.endpoint, None
        if endpoint is not None:
            endpoint.active -= 1

    # -- response side (called by the upstream connection) ----------------------------------------

    def response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], chunked: bool
    ) -> None:
        if status < 200:
            if not self.http10:  # HTTP/1.0 clients do not understand interim responses
                self.out.append(b"HTTP/1.1 %d %s\r\n\r\n" % (status, reason))
            return
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        append = lines.append
        framing: bytes | None = None  # b"content-length" or b"transfer-encoding" as received
        connection: bytes | None = None
        for name, value in headers:
            lname = name.lower()
            if lname in _RESPONSE_DROP:
                if lname == b"transfer-encoding":
                    framing = lname
                elif lname == b"connection":
                    connection = value if connection is None else connection + b"," + value
                continue
            if lname == b"content-length":
                framing = lname
            append(b"%s: %s\r\n" % (name, value))
        if connection is not None:
            named = connection_tokens([connection]) - HOP_BY_HOP
            if named:  # fields the upstream declared hop-by-hop (RFC 9110 §7.6.1)
                lines = [lines[0]] + [
                    line for line in lines[1:] if line.split(b":", 1)[0].lower() not in named
                ]
        lines.append(b"x-request-id: %s\r\n" % self.request_id)
        for name, value in self.request.response_headers:
            lines.append(b"%s: %s\r\n" % (name, value))
        if self.explain is not None:
            lines.append(b"x-portway-explain: %s\r\n" % self.explain)
        no_body = self.head_request or status in (204, 304)
        self.response_no_body = no_body
        if not no_body and framing != b"content-length":
            self.until_close = framing is None
            # Chunked or read-until-close upstream framing: re-chunk for HTTP/1.1 clients; an
            # HTTP/1.0 client gets the raw bytes and the end of the connection marks the end.
            if self.http10:
                self.close_after = True
            else:
                self.response_chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
        elif framing == b"transfer-encoding" and no_body and not self.http10:
            lines.append(b"transfer-encoding: chunked\r\n")
        if not self.request_done or not self.keep_alive or self.client.draining:
            self.close_after = True
        if self.close_after:
            lines.append(b"connection: close\r\n")
        elif self.http10:
            lines.append(b"connection: keep-alive\r\n")
        lines.append(b"\r\n")
        self.out.append(b"".join(lines))
        self.started = True

    def response_body(self, data: bytes) -> None:
        if self.response_chunked:
            self.out.append(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.out.append(data)

    def response_trailer(self, name: bytes, value: bytes) -> None:
        if self.trailers is None:
            self.trailers = []
        if name.lower() not in HOP_BY_HOP:
            self.trailers.append(b"%s: %s\r\n" % (name, value))

    def response_complete(self) -> None:
        if self.response_chunked:
            trailers = self.trailers
            self.out.append(b"0\r\n%s\r\n" % b"".join(trailers) if trailers else b"0\r\n\r\n")
        self.complete = True

    def response_flush(self, connection: UpstreamConnection) -> None:
        out = self.out
        if out:
            self.client.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
        if self.complete and not self.finished:
            service = self.service
            assert service is not None and self.endpoint is not None
            clean = connection.keep_alive and self.request_done and not self.pending
            self.upstream = None
            if clean:
                service.pools[self.endpoint.index].release(connection)
            else:
                connection.close()
            self._finish(self.close_after)
        elif self.upstream is not None:
            connection.deadline = self.client.sweeper.now + (
                self.service.read_timeout if self.service is not None else 0.0
            )

    def upstream_lost(self, connection: UpstreamConnection, error: str) -> None:
        if self.finished or connection is not self.upstream:
            return
        self.upstream = None
        if self.started and self.until_close:
            # Read-until-close framing (RFC 9112 §6.3 rule 8): the close is the end of the body.
            self.response_complete()
            self._flush_out()
            self._finish(self.close_after)
            return
        if self.started:
            self._flush_out()
            self._abort_client()
            return
        if (
            connection.reused
            and connection.bytes_received == 0
            and self.replay is not None
            and self.request_done
        ):
            # A stale keep-alive connection: the request never reached an application. Replay it once.
            self.pending = list(self.replay)
            self.pending_bytes = sum(len(c) for c in self.pending)
            self.replay = None
            endpoint = self.endpoint
            assert endpoint is not None
            self.connect_task = self.client.loop.create_task(self._connect(endpoint))
            return
        service_name = self.service.name if self.service is not None else "?"
        self.fail(
            502,
            f"service '{service_name}': {error} before a complete response",
            responses.UPSTREAM_RESET if "closed" in error else responses.UPSTREAM_BAD_RESPONSE,
        )

    def upstream_timeout(self, connection: UpstreamConnection) -> None:
        if connection is not self.upstream:
            connection.close()
            return
        self.upstream = None
        connection.close()
        if self.started:
            self._flush_out()
            self._abort_client()
        else:
            service_name = self.service.name if self.service is not None else "?"
            self.fail(
                504,
                f"service '{service_name}' did not answer in time",
                responses.UPSTREAM_TIMEOUT,
            )

    def upstream_write_paused(self, paused: bool) -> None:
        self.client.pause_reading(PAUSE_UPSTREAM, paused)

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

    # -- endings ---------------------------------------------------------------------------------

    def fail(self, status: int, detail: str, cause: bytes) -> None:
        """Answer an error if the response has not started, else cut the client connection."""
        if self.finished:
            return
        if self.started:
            self._abort_client()
            return
        close = not self.request_done or not self.keep_alive or self.client.draining
        self._write_local(
            responses.local_response(
                status,
                detail,
                self.request_id,
                cause=cause,
                close=close,
                head_only=self.head_request,
            ),
            close,
        )

    def _write_local(self, response: bytes, close: bool) -> None:
        self.started = self.complete = True
        self.client.transport.write(response)
        self._finish(close or not self.request_done)

    def _flush_out(self) -> None:
        if self.out:
            self.client.transport.write(b"".join(self.out))
            self.out.clear()

    def _abort_client(self) -> None:
        self._finish(True)
        self.client.abort()

    def _finish(self, close: bool) -> None:
        if self.finished:
            return
        self.finished = True
        client = self.client
        if client.paused & (PAUSE_PENDING | PAUSE_UPSTREAM):
            # This exchange's reasons to hold the client back end with it: a full upstream write
            # buffer reports resume_writing to nobody once the connection went back to the pool.
            client.pause_reading(PAUSE_PENDING | PAUSE_UPSTREAM, False)
        self._leave_endpoint()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.close()
        self.client.exchange_finished(self, close)

    def client_lost(self) -> None:
        """The client connection closed: nothing more can be sent; free what this exchange holds."""
        if self.finished:
            return
        self.finished = True
        self._leave_endpoint()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__
