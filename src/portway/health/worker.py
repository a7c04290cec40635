"""A gateway's side of active health checks: run the prober itself, or follow the shared board.

* ``"local"``: the gateway runs alone in its process (tests, the demo, an embedder); it runs the
  ``Prober`` on its own loop and the prober sets the endpoints directly.
* a ``Board``: a worker of ``portway run``; the supervisor's one prober process writes the board and
  this worker applies it to its snapshot every ``READ_INTERVAL`` (one 8-byte read when nothing
  changed), so N workers cost one check per instance, not N.
* ``"off"``: no health checks; endpoints stay as they are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Literal

from portway.config.model import Config
from portway.health.board import Board, BoardReader
from portway.health.prober import Prober
from portway.health.sinks import EndpointSink
from portway.health.state import HasEndpoints

log = logging.getLogger("portway.health")

HealthSource = Board | Literal["local", "off"]
READ_INTERVAL = 0.2  # how stale a worker's view of the board may be, at most (plus one check)


class WorkerHealth:
    def __init__(
        self,
        source: HealthSource,
        config: Config,
        loop: asyncio.AbstractEventLoop,
        services: Callable[[], Mapping[str, HasEndpoints]],
    ) -> None:
        self.loop = loop
        self.services = services
        self.prober: Prober | None = None
        self.reader: BoardReader | None = None
        if isinstance(source, Board):
            self.reader = source.reader()
        elif source == "local":
            self.prober = Prober(config, EndpointSink(services), loop)
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self.prober is not None:
            self.prober.start()
        if self.reader is not None and self._timer is None:
            self._read()

    def reload(self, config: Config) -> None:
        """Call right after the new snapshot is live: its new endpoints get their states now."""
        if self.prober is not None:
            self.prober.reload(config)
        if self.reader is not None:
            self._apply()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.prober is not None:
            await self.prober.close()

    def _read(self) -> None:
        try:
            self._apply()
        except Exception:  # a bad read must not stop this worker from following later ones
            log.exception("reading the health board failed")
        self._timer = self.loop.call_later(READ_INTERVAL, self._read)

    def _apply(self) -> None:
        assert self.reader is not None
        for change in self.reader.apply(self.services()):
            log.debug(
                "service %s instance %s is now %s",
                change.service,
                change.address,
                "healthy" if change.healthy else "unhealthy",
            )
