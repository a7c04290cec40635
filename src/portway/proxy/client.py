"""What an exchange needs from the client connection it belongs to (implemented by the listener)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from portway.deadlines import Sweeper
from portway.observability.access_log import AccessLog
from portway.observability.stats import WorkerStats

if TYPE_CHECKING:
    from portway.observability.tracing import Tracing
    from portway.proxy.exchange import Exchange


class ClientEnd(asyncio.Protocol):
    """The client connection an exchange belongs to, as the exchange sees it
    (``server.http1.ClientConnection`` is one). A base class rather than a ``typing.Protocol`` so
    that, compiled with mypyc, the exchange reads these attributes and calls these methods natively
    instead of by name."""

    __slots__ = ()

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    sweeper: Sweeper  # its ``now`` is the clock deadlines are set from
    paused: int  # reasons reading from the client is paused, a bit each
    write_paused: bool  # the client's transport buffer is full (asyncio pause_writing)
    stats: WorkerStats
    access_log: AccessLog | None
    tracing: Tracing | None

    @property
    def draining(self) -> bool:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        """Write ``data`` to the client after this loop iteration's callbacks
        (portway.write_batch)."""
        raise NotImplementedError

    def pause_reading(self, reason: int, paused: bool) -> None:
        """Pause (or resume) reading from the client for ``reason``; reading resumes when no
        reason is left."""
        raise NotImplementedError

    def exchange_finished(self, exchange: Exchange, close: bool) -> None:
        """The exchange wrote its whole response; start the next one or close the connection."""
        raise NotImplementedError

    def abort(self) -> None:
        """End the client connection now (a response was cut short)."""
        raise NotImplementedError
