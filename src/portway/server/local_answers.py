"""What a client connection answers by itself, without an upstream.

``answer``: one exchange gets a ``LocalAnswer`` (an edge decision, a redirect, a policy's refusal,
a rewrite that failed), written in its turn among the connection's exchanges. ``protocol_error``:
the connection itself is at fault (a malformed or oversized head, a body too large, a slow client):
the error is answered after the responses already owed and the connection closes, parsing nothing
more. A request that never became an exchange is still counted and logged (``_account_error``).

Plain functions of the connection, compiled with it (setup.py ``COMPILED``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from portway.errors import HttpError
from portway.messages import LocalAnswer
from portway.observability.log_lines import Entry
from portway.proxy import responses
from portway.proxy.exchange import Exchange
from portway.upstream.forward import new_request_id

if TYPE_CHECKING:
    from portway.server.http1 import ClientConnection


def answer(
    conn: ClientConnection,
    exchange: Exchange,
    local: LocalAnswer,
    has_body: bool,
    keep_alive: bool,
    method: bytes,
) -> None:
    """Answer ``exchange`` with ``local``, closing after it when the request's body or framing
    would leave the connection unusable (or the worker is draining)."""
    close = has_body or not keep_alive or conn.ctx.draining
    exchange.answer_locally(
        responses.local_response(
            local.status,
            local.detail,
            exchange.rid,
            cause=local.cause,
            close=close,
            head_only=method == b"HEAD",
            extra_headers=local.headers,
            body=local.body,
        ),
        close=close,
        status=local.status,
        cause=local.cause,
    )


def protocol_error(conn: ClientConnection, error: HttpError) -> None:
    """Answer ``error`` after the responses already owed, then close; parse nothing more."""
    conn.broken = True
    conn.in_head = False
    if not conn.closed:
        conn.transport.pause_reading()
    exchange = conn.parsing
    if exchange is not None and not exchange.finished and exchange in conn.queue:
        # The error concerns a request whose head was accepted (e.g. its body is too large).
        if exchange is conn.queue[0]:
            exchange.request_done = False  # forces connection: close
            exchange.fail(error.status, error.detail, error.cause)
        else:
            exchange.answer_locally(
                _error_response(error, exchange.rid),
                True,
                status=error.status,
                cause=error.cause,
            )
        return
    request_id = new_request_id()
    response = _error_response(error, request_id)
    _account_error(conn, error, request_id, len(response))
    if conn.queue:
        conn.final_error = response
    else:
        conn.send(response)
        conn.close()


def _account_error(conn: ClientConnection, error: HttpError, request_id: bytes, size: int) -> None:
    """A request that never became an exchange still counts, and is logged."""
    conn.stats.record("", "", "", error.status, 0.0, -1.0, 0, size, error.cause)
    if conn.access_log is not None:
        now = time.monotonic()
        conn.access_log.add(
            Entry(
                now,
                now,
                0.0,
                0.0,
                0.0,
                "",
                error.status,
                0,
                size,
                0,
                request_id.decode("ascii"),
                "",
                conn.client_ip,
                "",
                b"",
                b"",
                "",
                "",
                "1.1",
                "",
                "",
                "",
                error.cause.decode("ascii"),
            )
        )


def _error_response(error: HttpError, request_id: bytes) -> bytes:
    return responses.local_response(
        error.status,
        error.detail,
        request_id,
        cause=error.cause,
        close=True,
        extra_headers=list(error.headers),
    )
