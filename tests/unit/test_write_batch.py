"""portway.write_batch over real loopback sockets on the worker's event loop: writes held until the
loop has run the current iteration's callbacks, then sent in order; flush before a close; bytes for
a closed transport dropped without losing anybody else's."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import cast

import pytest

from portway.deadlines import Sweeper
from portway.gateway import new_event_loop
from portway.write_batch import HELD_WHEN_BUSY, HELD_WHEN_IDLE, WriteBatch


class Sink(asyncio.Protocol):
    """The proxy's side of a connection: a transport to write to, and whether writing paused."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.on_pause: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def pause_writing(self) -> None:
        if self.on_pause is not None:
            self.on_pause()


Scenario = Callable[[asyncio.AbstractEventLoop, WriteBatch], Awaitable[None]]


PEERS: list[socket.socket] = []  # the readers' ends opened by a scenario, closed after it


def run(scenario: Scenario) -> None:
    loop = new_event_loop()
    try:
        loop.run_until_complete(scenario(loop, WriteBatch(loop)))
        loop.run_until_complete(asyncio.sleep(0.01))  # the transports closed finish closing
    finally:
        for peer in PEERS:
            peer.close()
        PEERS.clear()
        loop.close()


async def connected(
    loop: asyncio.AbstractEventLoop,
) -> tuple[asyncio.Transport, Sink, socket.socket]:
    """A loopback TCP connection: a transport on the loop, and the plain socket at its other end
    (the reader)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        transport, sink = await loop.create_connection(Sink, *server.getsockname()[:2])
        peer, _ = server.accept()
    PEERS.append(peer)
    peer.setblocking(False)
    return cast(asyncio.Transport, transport), sink, peer


def received(peer: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = peer.recv(65536)
        except BlockingIOError:
            return data
        if not chunk:
            return data + b"<EOF>"
        data += chunk


async def one_iteration() -> None:
    # Two hops: the batch's call_soon callback runs in the iteration after the one that wrote.
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def test_writes_wait_for_the_iteration_then_go_out_in_order() -> None:
    async def scenario(loop: asyncio.AbstractEventLoop, batch: WriteBatch) -> None:
        first, _, first_peer = await connected(loop)
        second, _, second_peer = await connected(loop)
        batch.write(first, b"HTTP/1.1 200 OK\r\n")
        batch.write(second, b"GET / HTTP/1.1\r\n")
        batch.write(first, b"content-length: 0\r\n\r\n")
        # Nothing is on the wire before the loop has run the rest of this iteration.
        assert received(first_peer) == b""
        assert received(second_peer) == b""
        assert len(batch) == 3
        await one_iteration()
        assert len(batch) == 0
        assert received(first_peer) == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
        assert received(second_peer) == b"GET / HTTP/1.1\r\n"
        for transport in (first, second):
            transport.close()

    run(scenario)


@pytest.mark.parametrize(("load", "limit"), [(0.0, HELD_WHEN_IDLE), (0.95, HELD_WHEN_BUSY)])
def test_a_burst_goes_out_every_limit_writes_without_waiting_for_the_iteration(
    load: float, limit: int
) -> None:
    async def scenario(loop: asyncio.AbstractEventLoop, batch: WriteBatch) -> None:
        batch.adapt(load)
        assert batch.limit == limit
        transport, _, peer = await connected(loop)
        for i in range(limit - 1):
            batch.write(transport, b"%d," % i)
        assert received(peer) == b""  # held: fewer than the limit
        batch.write(transport, b"last")
        assert len(batch) == 0
        # Written within this iteration: loopback delivers before write() returns.
        assert received(peer) == b"".join(b"%d," % i for i in range(limit - 1)) + b"last"
        transport.close()

    run(scenario)


def test_the_limit_follows_the_load_the_sweeper_measures() -> None:
    """A worker that spent its time computing holds more writes; one that waited, fewer (the
    sweeper's measure: process CPU time over loop time)."""
    loop = new_event_loop()
    sweeper = Sweeper(loop, interval=0.05)
    limits: list[int] = []
    sweeper.hooks.append(lambda now: limits.append(sweeper.writes.limit))

    async def busy_then_idle() -> int:
        spin_until = time.process_time() + 0.3
        while time.process_time() < spin_until:  # busy: the loop hardly gets to sweep
            await asyncio.sleep(0)
        busy_limit = sweeper.writes.limit
        await asyncio.sleep(0.3)  # idle: sweeps with nothing to do in between
        return busy_limit

    try:
        assert sweeper.writes.limit == HELD_WHEN_IDLE  # until measured
        sweeper.start()
        busy_limit = loop.run_until_complete(busy_then_idle())
    finally:
        sweeper.stop()
        loop.close()
    assert busy_limit == HELD_WHEN_BUSY
    assert sweeper.writes.limit == HELD_WHEN_IDLE
    # as each sweep's hooks saw it: the start's idle limit, the busy one, then idle again
    assert limits[0] == HELD_WHEN_IDLE and HELD_WHEN_BUSY in limits


def test_flush_writes_at_once_so_a_close_after_it_loses_nothing() -> None:
    async def scenario(loop: asyncio.AbstractEventLoop, batch: WriteBatch) -> None:
        transport, _, peer = await connected(loop)
        batch.write(transport, b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
        batch.flush()
        transport.close()
        await one_iteration()
        assert received(peer) == b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n<EOF>"

    run(scenario)


def test_bytes_for_a_transport_closed_meanwhile_are_dropped_and_the_rest_written() -> None:
    async def scenario(loop: asyncio.AbstractEventLoop, batch: WriteBatch) -> None:
        gone, _, gone_peer = await connected(loop)
        alive, _, alive_peer = await connected(loop)
        batch.write(gone, b"never sent")
        batch.write(alive, b"sent")
        gone.close()  # without a flush: what the batch held for it is dropped
        await one_iteration()
        assert received(gone_peer) == b"<EOF>"
        assert received(alive_peer) == b"sent"
        alive.close()

    run(scenario)


def test_a_transport_that_refuses_the_write_is_aborted_and_the_others_still_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario(loop: asyncio.AbstractEventLoop, batch: WriteBatch) -> None:
        broken, _, broken_peer = await connected(loop)
        fine, _, fine_peer = await connected(loop)
        broken.write_eof()  # a write after write_eof raises RuntimeError
        batch.write(broken, b"refused")
        batch.write(fine, b"after the broken one")
        with caplog.at_level(logging.ERROR, logger="portway.write_batch"):
            await one_iteration()
        assert received(fine_peer) == b"after the broken one"
        assert broken.is_closing()
        assert "writing to" in caplog.text and "failed" in caplog.text
        await one_iteration()
        assert received(broken_peer).endswith(b"<EOF>")
        fine.close()

    run(scenario)


def test_a_write_made_while_flushing_goes_out_in_the_next_iteration() -> None:
    async def scenario(loop: asyncio.AbstractEventLoop, batch: WriteBatch) -> None:
        transport, sink, _ = await connected(loop)  # its reader never reads: writing pauses
        other, _, other_peer = await connected(loop)
        # A tiny high-water mark: the first write pauses writing, from inside the flush.
        transport.set_write_buffer_limits(high=1)
        big = b"x" * (64 << 20)  # more than loopback takes at once: the rest stays buffered

        def paused() -> None:
            batch.write(other, b"written by the callback")
            batch.flush()  # re-entrant: the flush under way keeps the order, this one returns

        sink.on_pause = paused
        batch.write(transport, big)
        batch.write(other, b"queued before the callback;")
        batch.flush()
        # The callback's write came after the one queued before it, and waits for the next
        # iteration.
        assert received(other_peer) == b"queued before the callback;"
        assert len(batch) == 1
        await one_iteration()
        assert received(other_peer) == b"written by the callback"
        transport.abort()
        other.close()

    run(scenario)
