"""One request and its response through the gateway: dispatch, response relay, finish.

Theory of operation. The client connection parses a request head, routes it and creates an
``Exchange``. Exchanges of one client connection run strictly one after another (pipelined requests
wait their turn, so responses go out in order). ``start`` checks the service's circuit breaker and
makes the first *try*: pick an instance, get a connection to it, send the head (proxy/tries.py,
which also holds the failure rules). Request body bytes stream to the upstream as they arrive;
response bytes stream to the client as they arrive, each direction with one coalesced write per
read and flow control both ways. Once the response is complete, a clean upstream connection goes
back to its pool, and the exchange gives back everything it holds and is accounted.

An exchange is written in three modules: this one (dispatch, response relay, endings), its base
class ``ExchangeState`` (proxy/exchange_state.py: what it holds, its set-up, the request body) and
the functions of its upstream side (proxy/tries.py).
"""

from __future__ import annotations

import time
from typing import Final

from portway.balancing.sticky import SET_COOKIE
from portway.proxy import response_head, responses, tries
from portway.proxy.accounting import account
from portway.proxy.exchange_state import PAUSE_PENDING, PAUSE_UPSTREAM, ExchangeState
from portway.upstream.connection import UpstreamConnection
from portway.upstream.forward import HOP_BY_HOP

_monotonic: Final = time.monotonic


class Exchange(ExchangeState):
    """One request from head to end: what it holds (``ExchangeState``) and what it does."""

    __slots__ = ()

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
        tries.make_try(self)

    def resume_from_wait(self) -> bool:
        """A connection came free: try again. False (stay queued) when there is still no room."""
        if self.finished:
            return True
        if not tries.acquire(self):
            return False
        self.waiting = False
        self.deadline = self.request_deadline
        return True

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
            if status in service.retry_statuses and upstream is not None and tries.may_retry(self):
                tries.retry(self, upstream)
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
            self.finish(self.close_after)
        elif self.started and self.service is not None:
            connection.deadline = self.client.sweeper.now + self.service.read_timeout

    def upstream_lost(self, connection: UpstreamConnection, error: str) -> None:
        """A failure rule (proxy/tries.py): end the body, cut the client, replay, retry or fail."""
        tries.upstream_lost(self, connection, error)

    def upstream_timeout(self, connection: UpstreamConnection) -> None:
        """A failure rule (proxy/tries.py): cut the client, retry or fail."""
        tries.upstream_timeout(self, connection)

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
            self.cut_short()
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
                extra_headers=_for_a_failure(self.response_headers),
            ),
            close,
        )

    def _write_local(self, response: bytes, close: bool) -> None:
        self.started = self.complete = True
        self.bytes_out += len(response)
        self.client.send(response)
        self.finish(close or not self.request_done)

    def flush_out(self) -> None:
        """Send the client what the response queued, at once."""
        if self.out:
            data = b"".join(self.out)
            self.bytes_out += len(data)
            self.client.send(data)
            self.out.clear()

    def cut_short(self) -> None:
        """The response started but cannot be completed: send what it has, cut the client."""
        self.flush_out()
        self._abort_client()

    def _abort_client(self) -> None:
        self.finish(True)
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

    def finish(self, close: bool) -> None:
        """Release all this exchange holds; the client connection moves on (closes if ``close``)."""
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


def _for_a_failure(queued: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """What stages queued for the response that also goes on the gateway's own 502/503/504: the
    CORS fields (without them a browser shows the page a network error, not the 502), HSTS and
    rate-limit fields; not a sticky session's cookie, which names the instance that failed."""
    if not queued:
        return queued
    return [field for field in queued if field[0] != SET_COOKIE]
