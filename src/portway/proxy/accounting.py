"""What an exchange leaves behind when it ends: a count in the worker's statistics and, when
enabled, an access log entry. Raw values only; the writer thread and the admin process derive the
rest (dates, milliseconds, rates)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

from portway.observability.trace_context import Finished
from portway.proxy import responses

if TYPE_CHECKING:
    from portway.proxy.exchange import Exchange

_monotonic: Final = time.monotonic
_OVERFLOWS: Final = {
    responses.OVERFLOW_REQUESTS: "max_requests",
    responses.OVERFLOW_CONNECTIONS: "max_connections",
    responses.OVERFLOW_PENDING: "max_pending",
}


def account(exchange: Exchange) -> None:
    """Count this exchange in the worker's statistics and access log (once, at its end)."""
    client = exchange.client
    now = _monotonic()
    service = exchange.service
    route = exchange.route_name
    service_name = service.name if service is not None else ""
    status = exchange.status or 499  # the client went away before any answer (nginx's 499)
    t_start = exchange.t_start
    t_sent = exchange.t_sent
    t_first_byte = exchange.t_first_byte
    cause = exchange.cause
    client.stats.record(
        route,
        service_name,
        exchange.method,
        status,
        now - t_start,
        (t_first_byte or now) - t_sent if t_sent else -1.0,
        exchange.body_received,
        exchange.bytes_out,
        cause,
    )
    if cause is not None and service is not None:
        limit = _OVERFLOWS.get(cause)
        if limit is not None:
            client.stats.overflowed(service_name, limit)
    tracing = client.tracing
    if tracing is not None and exchange.trace.recording:
        tracing.add(
            Finished(
                exchange.trace,
                exchange,
                t_start,
                now,
                status,
                route,
                service_name,
                cause.decode("ascii") if cause is not None else "",
            )
        )
    access_log = client.access_log
    if access_log is not None:
        endpoint = exchange.endpoint
        if endpoint is None and exchange.tried:
            endpoint = exchange.tried[-1]
        # A plain tuple laid out as access_log.Entry (a NamedTuple costs a Python-level call).
        access_log.add(
            (
                t_start,
                now,
                t_sent,
                t_first_byte,
                exchange.t_connect,
                exchange.path,
                status,
                exchange.body_received,
                exchange.bytes_out,
                exchange.attempt,
                exchange.request_id,
                exchange.trace.trace_id.decode("ascii"),
                exchange.client_ip,
                exchange.consumer,
                exchange.user_agent,
                exchange.referer,
                exchange.method,
                exchange.host,
                "1.0" if exchange.http10 else "1.1",
                route,
                service_name,
                endpoint.address if endpoint is not None else "",
                cause.decode("ascii") if cause is not None else "",
            )
        )
