"""An exchange's tries: pick an instance, get a connection to it, send; and where a failure leads.

A *try* picks an instance, takes an idle upstream connection from its pool or opens one (or waits
for one when the service is at ``max_connections``), and sends the request head plus any body bytes
received so far. No Task, Future or timer exists per request unless a connection must be opened or
a retry waits.

Failure rules. A connect failure (nothing was sent) moves on to another instance, ``connect_retries``
times. A reused idle connection that dies before any response byte is replayed once on a fresh one
(an idempotent request whose body was kept). A reset, a timeout before the response head, or a
status in ``retries.on_statuses`` is retried on another instance after a jittered back-off when
the method is idempotent (or the service opts in), the body was kept (``buffer_limit``), attempts
remain and the retry budget allows. Nothing is retried once the first response byte went to the
client: from then on a failure can only end the client connection. Each outcome is reported to the
service's outlier detector.

Plain functions of the ``Exchange`` (proxy/exchange.py), so that its file stays readable, rather
than methods of a base class, which could not queue itself where an ``Exchange`` is expected (the
service's waiting list); compiled with it (setup.py ``COMPILED``), the calls both ways stay native.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final

from portway.balancing import Endpoint
from portway.proxy import responses
from portway.proxy.exchange_state import IDEMPOTENT, PAUSE_PENDING
from portway.proxy.service import Service
from portway.upstream.connection import UpstreamConnection

if TYPE_CHECKING:
    from portway.proxy.exchange import Exchange

_monotonic: Final = time.monotonic


# -- a try: pick, connect, send --------------------------------------------------------------------


def make_try(exchange: Exchange) -> None:
    """Pick an instance and get a connection to it: the first try, or a retry after its back-off."""
    exchange.retry_handle = None
    if exchange.finished:
        return
    service = exchange.service
    assert service is not None
    endpoint = service.pick(exchange, exchange.tried)
    if endpoint is None and exchange.attempt:
        endpoint = service.pick(exchange, ())  # a retry may return to a tried instance
    if endpoint is None:
        unavailable = service.config.unavailable
        if unavailable is not None and not service.endpoints:
            exchange.fail(503, unavailable, responses.BACKEND_NOT_FOUND)
        else:
            exchange.fail(
                503,
                f"no healthy instance of service '{service.name}'",
                responses.NO_HEALTHY_INSTANCE,
            )
        return
    exchange.endpoint = endpoint
    endpoint.active += 1
    trace = exchange.trace
    if trace.recording:
        trace.begin_try(endpoint.address, _monotonic())
    upstream = service.pools[endpoint.index].acquire()
    if upstream is not None:
        _bind(exchange, upstream)
    elif not _open(exchange, service, endpoint):
        if service.max_pending and len(service.waiting) < service.max_pending:
            exchange.waiting = True
            service.waiting.append(exchange)
            sweeper = exchange.client.sweeper
            wait_end = sweeper.now + service.connect_timeout
            exchange.deadline = min(wait_end, exchange.request_deadline or wait_end)
            exchange.in_sweeper = True
            sweeper.add(exchange)
        else:
            exchange.fail(
                503,
                f"service '{service.name}' is at its limit of "
                f"{service.max_connections} connections",
                responses.OVERFLOW_CONNECTIONS,
            )


def acquire(exchange: Exchange) -> bool:
    """Bind an idle connection or start opening one; False when the breaker allows neither."""
    service = exchange.service
    endpoint = exchange.endpoint
    assert service is not None and endpoint is not None
    upstream = service.pools[endpoint.index].acquire()
    if upstream is not None:
        _bind(exchange, upstream)
        return True
    return _open(exchange, service, endpoint)


def _open(exchange: Exchange, service: Service, endpoint: Endpoint) -> bool:
    """Start opening a connection to ``endpoint``; False when the breaker does not allow it."""
    if not service.may_open_connection():
        return False
    service.open_connections += 1  # counted from the start of the connect
    exchange.connect_task = exchange.client.loop.create_task(_connect(exchange, endpoint))
    return True


async def _connect(exchange: Exchange, endpoint: Endpoint) -> None:
    service = exchange.service
    assert service is not None
    pool = service.pools[endpoint.index]
    began = _monotonic()
    try:
        upstream = await pool.connect(service.connect_timeout)
    except (OSError, TimeoutError) as exc:
        exchange.connect_task = None
        service.connection_closed()
        if not exchange.finished:
            _connect_failed(exchange, endpoint, exc)
        return
    except asyncio.CancelledError:
        service.connection_closed()
        return
    exchange.connect_task = None
    exchange.t_connect = _monotonic() - began
    if exchange.finished:  # the client went away meanwhile: keep the connection for others
        pool.release(upstream)
        return
    _bind(exchange, upstream)


def _connect_failed(exchange: Exchange, endpoint: Endpoint, exc: BaseException) -> None:
    service = exchange.service
    assert service is not None
    exchange.trace.end_try(_monotonic(), error="connect")
    service.failed(endpoint, "connect")
    _leave_endpoint(exchange)
    exchange.tried += (endpoint,)
    exchange.connect_failures += 1
    if exchange.connect_failures <= service.connect_retries:
        nxt = service.pick(exchange, exchange.tried)
        if nxt is not None:
            exchange.endpoint = nxt
            nxt.active += 1
            exchange.trace.begin_try(nxt.address, _monotonic())
            if not acquire(exchange):
                exchange.fail(
                    503,
                    f"service '{service.name}' is at its limit of "
                    f"{service.max_connections} connections",
                    responses.OVERFLOW_CONNECTIONS,
                )
            return
    if isinstance(exc, TimeoutError):
        exchange.fail(
            504,
            f"no instance of service '{service.name}' accepted a connection in time",
            responses.UPSTREAM_TIMEOUT,
        )
    else:
        exchange.fail(
            502,
            f"could not connect to service '{service.name}' ({_describe(exc)})",
            responses.UPSTREAM_REFUSED,
        )


def _bind(exchange: Exchange, upstream: UpstreamConnection) -> None:
    """Send the request head (and the body bytes received so far) on ``upstream``."""
    service = exchange.service
    endpoint = exchange.endpoint
    assert service is not None and endpoint is not None
    exchange.upstream = upstream
    trace = exchange.trace
    # Request line, host, trace context, the client's and the forwarding headers: one bytes
    # formatting, which compiled is one allocation and a copy per piece (a join of a list of the
    # pieces cost ~130 instructions a piece).
    head = b"%s %s HTTP/1.1\r\nhost: %s\r\ntraceparent: 00-%s-%s-%s\r\n%s%s" % (
        exchange.verb,
        exchange.target,
        service.host_header(endpoint) if service.rewrite_host else exchange.authority,
        trace.trace_id,
        trace.try_id,
        trace.flags,
        b"" if trace.tracestate is None else b"tracestate: %s\r\n" % trace.tracestate,
        exchange.headers_rest,
    )
    pending = exchange.pending
    if pending:
        head = b"".join([head, *pending])
        pending.clear()
        exchange.pending_bytes = 0
    client = exchange.client
    if client.paused:
        client.pause_reading(PAUSE_PENDING, False)
    if not exchange.t_sent:
        exchange.t_sent = _monotonic()
    upstream.bind(exchange, head, service.first_byte_timeout)
    if client.write_paused:  # the client is still behind on an earlier response
        exchange.client_write_paused(True)


def _leave_endpoint(exchange: Exchange) -> None:
    endpoint, exchange.endpoint = exchange.endpoint, None
    if endpoint is not None:
        endpoint.active -= 1


# -- retries ---------------------------------------------------------------------------------------


def may_retry(exchange: Exchange) -> bool:
    service = exchange.service
    assert service is not None
    policy = service.retry
    return (
        exchange.attempt < policy.attempts
        and not exchange.started
        and exchange.request_done
        and exchange.replay is not None
        and (exchange.verb in IDEMPOTENT or policy.non_idempotent)
        and (exchange.retrying or service.retry_allowed())
    )


def retry(exchange: Exchange, connection: UpstreamConnection) -> None:
    """Abandon this try (its connection cannot be reused) and try again after a back-off."""
    service = exchange.service
    endpoint = exchange.endpoint
    assert service is not None and endpoint is not None and exchange.replay is not None
    exchange.upstream = None
    connection.close()
    _leave_endpoint(exchange)
    exchange.tried += (endpoint,)
    exchange.attempt += 1
    if not exchange.retrying:
        exchange.retrying = True
        service.active_retries += 1
    exchange.client.stats.retried(service.name)
    exchange.out.clear()
    exchange.trailers = None
    exchange.pending = list(exchange.replay)
    exchange.pending_bytes = sum(len(chunk) for chunk in exchange.pending)
    policy = service.retry
    ceiling = min(policy.backoff_max, policy.backoff_base * 2 ** (exchange.attempt - 1))
    delay = service.rng.uniform(0, ceiling)  # full jitter: retries of many clients spread out
    exchange.retry_handle = exchange.client.loop.call_later(delay, make_try, exchange)


# -- the bound connection failed (Exchange.upstream_lost and upstream_timeout) ---------------------


def upstream_lost(exchange: Exchange, connection: UpstreamConnection, error: str) -> None:
    if exchange.finished or connection is not exchange.upstream:
        return
    exchange.upstream = None
    if exchange.started and exchange.framing.until_close:
        # Read-until-close framing (RFC 9112 §6.3 rule 8): the close is the end of the body.
        exchange.response_complete()
        exchange.flush_out()
        exchange.finish(exchange.close_after)
        return
    if exchange.started:
        exchange.cut_short()
        return
    service = exchange.service
    endpoint = exchange.endpoint
    assert service is not None and endpoint is not None
    if (
        connection.reused
        and connection.bytes_received == 0
        and exchange.replay is not None
        and exchange.request_done
        and not exchange.replayed
        and (exchange.verb in IDEMPOTENT or service.retry.non_idempotent)
    ):
        # A stale keep-alive connection: the request never reached an application. Replay it
        # once on a fresh connection; the instance did nothing wrong.
        exchange.pending = list(exchange.replay)
        exchange.pending_bytes = sum(len(c) for c in exchange.pending)
        exchange.replayed = True  # the body stays kept: a retry elsewhere may still need it
        service.open_connections += 1
        exchange.connect_task = exchange.client.loop.create_task(_connect(exchange, endpoint))
        return
    exchange.trace.end_try(_monotonic(), error="reset")
    service.failed(endpoint, "reset")
    if may_retry(exchange):
        retry(exchange, connection)
        return
    exchange.fail(
        502,
        f"service '{service.name}': {error} before a complete response",
        responses.UPSTREAM_RESET if "closed" in error else responses.UPSTREAM_BAD_RESPONSE,
    )


def upstream_timeout(exchange: Exchange, connection: UpstreamConnection) -> None:
    if connection is not exchange.upstream:
        connection.close()
        return
    if exchange.started:
        exchange.upstream = None
        connection.close()
        exchange.cut_short()
        return
    service = exchange.service
    endpoint = exchange.endpoint
    assert service is not None and endpoint is not None
    exchange.trace.end_try(_monotonic(), error="timeout")
    service.failed(endpoint, "timeout")
    if may_retry(exchange):
        retry(exchange, connection)
        return
    exchange.upstream = None
    connection.close()
    exchange.fail(
        504, f"service '{service.name}' did not answer in time", responses.UPSTREAM_TIMEOUT
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__
