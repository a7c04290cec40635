"""A request whose policies have not decided yet: held in its place until their verdict comes.

A route's policies may keep a request waiting for their verdict (``PolicyChain.apply`` returns a
``PendingChain``): the exchange is queued like any other but has no service yet, so
``Exchange.start`` leaves it alone and its body bytes are buffered (pausing the client past the high
water mark); once the verdict is known ``await_policies`` answers it or finishes its dispatch
(``exchange_builder.forward``), and starts it if its turn has come. The connection keeps the
verdicts it awaits (``policy_waits``) and cancels them when the client leaves. Synchronous chains
never get here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from portway.messages import LocalAnswer
from portway.policies.base import UNAVAILABLE
from portway.policies.chain import PendingChain
from portway.proxy.exchange import Exchange
from portway.proxy.service import Service
from portway.routing import CompiledRoute
from portway.server.local_answers import answer

if TYPE_CHECKING:
    from portway.server.http1 import ClientConnection

UNAVAILABLE_CAUSE: Final = UNAVAILABLE.encode()
log = logging.getLogger("portway.server")


def await_policies(
    conn: ClientConnection,
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
    waits = conn.policy_waits
    if waits is None:
        waits = conn.policy_waits = set()
    waits.add(verdict)

    def decided(outcome: LocalAnswer | bytes) -> None:
        waits.discard(verdict)
        if exchange.finished or exchange.local is not None or conn.closed:
            return  # answered or gone meanwhile (a protocol error, a timeout, a disconnect)
        try:
            if isinstance(outcome, LocalAnswer):
                exchange.service = service
                answer(conn, exchange, outcome, has_body, exchange.keep_alive, exchange.verb)
            else:
                forward(extra + outcome)
        except Exception:  # never a trace to the client, never a request left hanging
            log.exception("dispatching %s after its policies failed", exchange.request_id)
            exchange.service = service
            failed = LocalAnswer(503, "the request could not be dispatched", UNAVAILABLE_CAUSE)
            answer(conn, exchange, failed, has_body, exchange.keep_alive, exchange.verb)
        queue = conn.queue
        if queue and queue[0] is exchange:
            exchange.start()

    verdict.then(decided)
