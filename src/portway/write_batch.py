"""A worker's socket writes, held until its loop has run the I/O callbacks of one iteration.

Why: when a proxy writes to a socket whose reader sleeps in ``epoll_wait``, the kernel wakes the
reader from inside the ``write`` call, and on a virtual machine waking a sleeping CPU is an
inter-processor interrupt that traps to the hypervisor: several microseconds billed to the writer.
A reader woken once then finds every write made meanwhile. Writing each response the moment it is
complete wakes the client (or the upstream) once per response when they are faster than the proxy,
which they usually are; writing the responses of one loop iteration back to back wakes it once per
iteration. Measured with one worker at 50 connections (docs/performance.md): about 2 µs of kernel
time per request less, at the price of some latency: a write waits for the rest of its iteration's
callbacks, or for ``limit`` writes after it, whichever comes first.

The limit follows the worker's load, as a network card's adaptive interrupt moderation does: a
worker busy most of the time holds up to ``HELD_WHEN_BUSY`` writes (the CPU saved is throughput it
needs), a mostly idle one at most ``HELD_WHEN_IDLE`` (it has CPU to spare, and its clients are
better served by a shorter wait). The deadlines sweeper measures the load and calls ``adapt``.

Rules that keep each connection's bytes in order, on which the data plane relies:
* Every write to a connection that may have bytes waiting here goes through ``write``, or calls
  ``flush`` first (a tunnel's relay writes directly, after ``flush``).
* ``flush`` before closing a transport: a transport closed with bytes still here would drop them.
  Aborting needs no flush (a reset drops the unsent bytes anyway).
* Bytes held for a transport that closed meanwhile are dropped: nobody is there to read them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

log: Final = logging.getLogger("portway.write_batch")

# Writes held at most: past it, they go out at once. In a burst (the responses of a 10 ms backend
# arrive in synchronized waves, tens in one iteration) this bounds how long the first responses
# wait for the rest to be processed. Measured side by side (docs/performance.md): under full load
# 32 costs less CPU per request than 8 or 16, and 64 less than 32 (0.592 / 0.600 against 0.524 /
# 0.553 of nginx's efficiency at 50 / 200 connections on an Intel host; 128 no better, and its p99
# at the 10 ms backend was 0.25 ms worse); at 20 % load (the 10 ms backend, 50 connections) 8 gave
# a p99 0.2 ms lower than 32, which is why an idle worker holds fewer.
HELD_WHEN_BUSY: Final = 64
HELD_WHEN_IDLE: Final = 8
# Share of one CPU the worker used since the last measure, from which it counts as busy.
BUSY: Final = 0.5


class WriteBatch:
    """Writes held in order (transport, data) until the end of the loop's current iteration."""

    __slots__ = ("_chunks", "_loop", "_scheduled", "_transports", "_writing", "limit")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.limit = HELD_WHEN_IDLE  # writes held at most (adapt)
        self._transports: list[asyncio.WriteTransport] = []
        self._chunks: list[bytes] = []
        self._scheduled = False
        self._writing = False

    def __len__(self) -> int:
        return len(self._chunks)

    def write(self, transport: asyncio.WriteTransport, data: bytes) -> None:
        """Send ``data`` on ``transport`` after this iteration's callbacks (call_soon callbacks run
        once the loop has dispatched the I/O events it polled)."""
        self._transports.append(transport)
        chunks = self._chunks
        chunks.append(data)
        if len(chunks) >= self.limit:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush_scheduled)

    def adapt(self, load: float) -> None:
        """Set the limit for a worker that used ``load`` of a CPU lately (0.25: a quarter)."""
        self.limit = HELD_WHEN_BUSY if load >= BUSY else HELD_WHEN_IDLE

    def _flush_scheduled(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        """Write everything held now, in the order it was given."""
        if self._writing:  # a write's callback (pause_writing) flushing again: already under way
            return
        transports = self._transports
        if not transports:
            return
        chunks = self._chunks
        self._transports = []
        self._chunks = []
        self._writing = True
        try:
            for i in range(len(transports)):
                transport = transports[i]
                if transport.is_closing():
                    continue
                try:
                    transport.write(chunks[i])
                except Exception:  # one broken transport must not keep the others' bytes
                    log.exception("writing to %r failed", transport)
                    transport.abort()
        finally:
            self._writing = False
        if self._transports and not self._scheduled:  # written while flushing: next iteration
            self._scheduled = True
            self._loop.call_soon(self._flush_scheduled)
