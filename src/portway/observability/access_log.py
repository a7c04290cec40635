"""The access log: one line per request, formatted on the event loop, written by a thread.

When an exchange ends its entry (raw values) is kept; ``FORMAT_DELAY`` later, or once
``MAX_PENDING`` entries wait, the entries are formatted together (JSON, Apache common or combined)
and appended to a list; every ``HANDOFF`` lines, and at each sweep, the list is handed to the
writer thread, which joins and writes it. The delay takes the formatting out of the path between a
response arriving and the next one going out: when responses come in bursts (many clients waiting
on the same slow backend), the last response of a burst no longer waits for the log lines of all
the others, and the lines are formatted in the quiet after the burst, in one loop that keeps its
code hot. Small hand-overs keep the writer's bursts short: it shares the worker's
CPU, and a writer that has slept for a second has the scheduler's better claim to it, so a
second's lines written in one go (milliseconds of work) could hold the loop up for as long. (In
the benchmark with a 10 ms backend this made no difference measurable through the noise; the
bound on a stall is the reason.) The
formatting is a couple of microseconds (JSON is hand-assembled, not ``json.dumps`` of a dict):
done by a thread it would cost more, as the thread must take the GIL from the event loop, and a
second's worth of lines formatted in one go (compiled code does not yield the GIL) stalls the loop
for as long. The lines themselves, and what is never logged: portway.observability.log_lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import random
import sys
import threading
import time
from typing import IO, Final

from portway.config.observability import AccessLogConfig
from portway.observability.log_lines import RENDERERS, EntryTuple, Renderer, Repeats, json_line

log: Final = logging.getLogger("portway.access_log")

# Lines in a batch handed to the writer thread: a burst of ~50 µs, a wake-up per 128 lines.
HANDOFF: Final = 128
# Seconds an entry waits before it is formatted: long enough for a burst of responses and the
# requests that follow them to be through (a burst of 50 takes about a millisecond), short enough
# that few entries pile up under full load (about 100 at 50,000 requests/s).
FORMAT_DELAY: Final = 0.002
# Entries waiting at most: past it they are formatted at once, whatever the delay.
MAX_PENDING: Final = 128
# Characters handed over and not yet written, at most (some 100,000 JSON lines); past it, dropped.
MAX_BACKLOG: Final = 32 << 20


class AccessLog:
    def __init__(
        self, config: AccessLogConfig, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        """``loop``: the worker's loop, which runs the delayed formatting; without one, each entry
        is formatted as it is added."""
        self.format = config.format
        self.path = config.path
        self.sample_rate = config.sample_rate
        self.sampling = config.sample_rate < 1.0
        self._render: Renderer = RENDERERS[config.format]
        self._json = config.format == "json"
        self._repeats = Repeats()
        # Wall clock minus monotonic clock, renewed at each flush: lines carry dates, exchanges
        # monotonic times.
        self._offset = time.time() - time.monotonic()
        self._loop = loop
        self._max_pending = MAX_PENDING if loop is not None else 1
        self._pending: list[EntryTuple] = []  # entries not formatted yet
        self._timer: asyncio.TimerHandle | None = None  # formats _pending
        self._batch: list[str] = []
        # (lines, their size in characters); None: stop
        self._queue: queue.SimpleQueue[tuple[list[str], int] | None] = queue.SimpleQueue()
        self._random = random.random
        # Characters handed over, and characters the writer is done with: what is between them
        # waits in the queue. A sink that stops taking data (a full disk, a stderr pipe nobody
        # reads) must not make the gateway's memory grow: past MAX_BACKLOG, batches are dropped
        # and counted. (Two counters, each written by one thread only: no lost updates.)
        self._handed = 0
        self._written = 0
        self.dropped = 0
        self._writer = threading.Thread(target=self._write_loop, name="access-log", daemon=True)
        self._writer.start()

    def add(self, entry: EntryTuple) -> None:
        """Log one request. ``entry`` may be a plain tuple laid out as ``Entry`` (the hot path
        builds those: a NamedTuple costs a Python-level ``__new__`` per request)."""
        if self.sampling and entry[6] < 500 and self._random() >= self.sample_rate:
            return
        pending = self._pending
        pending.append(entry)
        if len(pending) >= self._max_pending:
            self._format_pending()
        elif self._timer is None:
            loop = self._loop
            assert loop is not None  # without a loop every entry is formatted at once
            self._timer = loop.call_later(FORMAT_DELAY, self._format_pending)

    def _format_pending(self) -> None:
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
        pending = self._pending
        if not pending:
            return
        self._pending = []
        batch = self._batch
        offset = self._offset
        repeats = self._repeats
        if self._json:  # called directly: compiled, the entry is not boxed into a tuple object
            for entry in pending:
                batch.append(json_line(entry, offset, repeats))
        else:
            render = self._render
            for entry in pending:
                batch.append(render(entry, offset, repeats))
        if len(batch) >= HANDOFF:
            self._hand_over()

    def flush(self) -> None:
        """Format what waits and hand the lines gathered since the last hand-over to the writer
        (called by the sweeper), then renew the wall-clock offset."""
        self._format_pending()
        self._offset = time.time() - time.monotonic()
        if self._batch:
            self._hand_over()

    def _hand_over(self) -> None:
        batch = self._batch
        self._batch = []
        size = 0
        for line in batch:
            size += len(line)
        if self.backlog + size > MAX_BACKLOG:
            if not self.dropped:
                log.error("the access log cannot keep up with its sink: dropping lines")
            self.dropped += len(batch)
            return
        self._handed += size
        self._queue.put((batch, size))

    @property
    def backlog(self) -> int:
        """Characters handed to the writer and not yet written."""
        return self._handed - self._written

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._writer.join(5.0)

    def _write_loop(self) -> None:
        stream: IO[str]
        if self.path == "-":
            stream = sys.stderr
        else:
            try:
                stream = open(self.path, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115
            except OSError as exc:
                log.error("cannot open the access log %s (%s): writing to stderr", self.path, exc)
                stream = sys.stderr
        failing = False  # log a failing sink once, not once per batch
        while True:
            item = self._queue.get()
            if item is None:
                break
            batch, size = item
            try:
                stream.write("".join(batch))
                if self._queue.empty():  # written through when the buffer fills, else now
                    stream.flush()
                failing = False
            except (OSError, ValueError) as exc:  # a full disk must not stop the gateway
                if not failing:
                    log.error("access log write failed, lines are lost until it works: %s", exc)
                failing = True
            finally:
                self._written += size
        if stream is not sys.stderr:
            # The buffered tail of a broken sink is lost, as its lines were.
            with contextlib.suppress(OSError):
                stream.close()
