"""The upstream pool over real loopback connections: LIFO reuse, caps, and what release resets."""

from __future__ import annotations

import asyncio

from portway.deadlines import Sweeper
from portway.gateway import new_event_loop
from portway.upstream.pool import Pool
from tests.support.backends import Backend


def run(coro_fn: object) -> None:
    loop = new_event_loop()
    try:
        loop.run_until_complete(coro_fn(loop))  # type: ignore[operator]
    finally:
        loop.close()


def test_release_resumes_reading_and_acquire_is_lifo() -> None:
    with Backend() as backend:

        async def scenario(loop: asyncio.AbstractEventLoop) -> None:
            pool = Pool(loop, Sweeper(loop), "127.0.0.1", backend.port, max_idle=4, idle_timeout=5)
            first = await pool.connect(1.0)
            second = await pool.connect(1.0)
            # A response that ended while the client was behind leaves reading paused.
            first.pause_reading()
            assert first.reading_paused and not first.transport.is_reading()
            pool.release(first)
            assert not first.reading_paused and first.transport.is_reading()
            pool.release(second)
            assert pool.acquire() is second  # most recently used first
            assert pool.acquire() is first
            assert pool.acquire() is None
            assert first.reused and second.reused
            first.close()
            second.close()
            await asyncio.sleep(0.05)  # let both ends see the closes before the backend stops

        run(scenario)


def test_release_beyond_max_idle_and_after_retire_closes() -> None:
    with Backend() as backend:

        async def scenario(loop: asyncio.AbstractEventLoop) -> None:
            pool = Pool(loop, Sweeper(loop), "127.0.0.1", backend.port, max_idle=1, idle_timeout=5)
            a, b, c = [await pool.connect(1.0) for _ in range(3)]
            pool.release(a)
            pool.release(b)  # over max_idle
            assert b.closed and not a.closed
            pool.retire()
            assert a.closed  # idle ones close on retire
            pool.release(c)  # a busy one coming back after retire
            assert c.closed
            assert pool.acquire() is None
            assert pool.connections_opened == 3
            await asyncio.sleep(0.05)  # let both ends see the closes before the backend stops

        run(scenario)


def test_connect_refused_raises_oserror() -> None:
    from tests.support.backends import refused_port

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        pool = Pool(loop, Sweeper(loop), "127.0.0.1", refused_port(), max_idle=1, idle_timeout=5)
        try:
            await pool.connect(1.0)
        except ConnectionRefusedError:
            return
        raise AssertionError("connect to a closed port succeeded")

    run(scenario)
