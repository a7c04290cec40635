"""Coarse deadlines for connections without a timer per request.

A timer handle per request (``loop.call_later``) costs an allocation and a heap operation on the hot
path. Instead every connection carries a ``deadline`` (loop time, 0 = none) that the hot path only
assigns, and one periodic sweep per worker fires the expired ones. The hot path reads the time from
``Sweeper.now``, the loop time cached at the last sweep (as nginx caches its clock), so setting a
deadline costs an addition. Resolution is the sweep interval, a quarter of the smallest configured
timeout (at most 1 s, at least 20 ms): a deadline fires between (timeout - interval) and
(timeout + interval) after it was set, so a 10 s header timeout holds within ~1 s and a 200 ms test
timeout within ~50 ms.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from portway.write_batch import WriteBatch

log = logging.getLogger("portway.deadlines")


class HasDeadline(Protocol):
    deadline: float

    def on_deadline(self) -> None: ...


MIN_INTERVAL = 0.02
MAX_INTERVAL = 1.0


def sweep_interval(smallest_timeout: float) -> float:
    return min(MAX_INTERVAL, max(MIN_INTERVAL, smallest_timeout / 4))


class Sweeper:
    """Fires ``on_deadline`` of registered objects whose deadline has passed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = MAX_INTERVAL) -> None:
        self._loop = loop
        self._members: set[HasDeadline] = set()
        self.interval = interval
        self._handle: asyncio.TimerHandle | None = None
        self.now = loop.time()
        # Called with the loop time after every sweep: periodic upkeep (ejections ending, health
        # read from the prober) at the sweep's cadence, without timers of their own.
        self.hooks: list[Callable[[float], None]] = []
        # The worker's connections write through this (portway.write_batch): a per-worker runtime
        # object like the sweep itself, reached by every connection the same way.
        self.writes = WriteBatch(loop)
        # The process's CPU time and the loop time at the last sweep: the worker's load since.
        self._cpu = time.process_time()
        self._measured = self.now

    def add(self, member: HasDeadline) -> None:
        self._members.add(member)

    def discard(self, member: HasDeadline) -> None:
        self._members.discard(member)

    def __len__(self) -> int:
        return len(self._members)

    def start(self) -> None:
        self.now = self._measured = self._loop.time()
        self._cpu = time.process_time()  # the start-up's work is not load
        if self._handle is None:
            self._handle = self._loop.call_later(self.interval, self._sweep)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _sweep(self) -> None:
        now = self.now = self._loop.time()
        expired = [m for m in self._members if 0.0 < m.deadline <= now]
        for member in expired:
            member.deadline = 0.0
            member.on_deadline()
        for hook in self.hooks:
            try:
                hook(now)
            except Exception:  # upkeep must not stop the sweep that enforces every deadline
                log.exception("periodic upkeep failed")
        self._measure_load(now)
        self._handle = self._loop.call_later(self.interval, self._sweep)

    def _measure_load(self, now: float) -> None:
        """Tell the write batch how busy the worker was since the last sweep (a CPU share)."""
        elapsed = now - self._measured
        if elapsed <= 0.0:
            return
        cpu = time.process_time()
        self.writes.adapt((cpu - self._cpu) / elapsed)
        self._cpu = cpu
        self._measured = now
