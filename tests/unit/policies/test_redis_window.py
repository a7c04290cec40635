"""``RedisWindow`` against a real ``redis-server``: instances (workers) on one event loop share a
limit, the over-admission stays within the bound the module proves, and an outage never delays a
decision and heals (counts included) when the server comes back, even empty."""

from __future__ import annotations

import asyncio
import gc
import inspect
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from portway.config.policies import RedisConfig
from portway.policies.redis_window import RedisWindow, redis_key_name
from tests.support.redis_server import RedisServer, running_redis


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


class TimedWindow(RedisWindow):
    """Records when each sync started and ended (for the real-time bound)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.syncs: list[tuple[float, float]] = []

    async def sync(self) -> None:
        started = time.monotonic()
        try:
            await super().sync()
        finally:
            self.syncs.append((started, time.monotonic()))


def make(
    server: RedisServer,
    *,
    name: str = "api",
    limit: int = 50,
    per: float = 2.0,
    prefix: str = "portway",
    interval: float = 60.0,
    timeout: float = 0.5,
    cls: type[RedisWindow] = RedisWindow,
) -> RedisWindow:
    """A window on the running loop; ``interval`` 60 s: only explicit ``sync()`` calls run."""
    config = RedisConfig(url=server.url, key_prefix=prefix, sync_interval=interval, timeout=timeout)
    return cls(name, limit, per, 1000, config, asyncio.get_running_loop())


async def started(*windows: RedisWindow) -> None:
    """Until each window's task has made its connection pool (its first step)."""
    for _ in range(100):
        if all(w.client is not None for w in windows):
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the sync task did not start")


async def stopped(*windows: RedisWindow) -> None:
    for window in windows:
        window.close()
    tasks = [w.task for w in windows if w.task is not None]
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5.0)


async def window_start(per: float, need: float) -> float:
    """Now, or the next window's start when fewer than ``need`` seconds remain in this one."""
    now = time.time()
    left = (math.floor(now / per) + 1) * per - now
    if left < need:
        await asyncio.sleep(left + 0.01)
    return time.time()


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def others(window: RedisWindow, key: str) -> tuple[int, int]:
    return window.shared(key, window.counts[key])


def test_the_request_path_never_awaits() -> None:
    assert not inspect.iscoroutinefunction(RedisWindow.hit)
    assert not inspect.iscoroutinefunction(RedisWindow.shared)
    assert not inspect.iscoroutinefunction(RedisWindow.close)


def test_long_keys_are_named_by_their_hash() -> None:
    assert redis_key_name("10.0.0.1") == b"10.0.0.1"
    assert redis_key_name("é" * 100) == ("é" * 100).encode()  # 200 bytes: kept
    hashed = redis_key_name("x" * 201)
    assert hashed.startswith(b"sha256:") and len(hashed) == 7 + 64


def test_two_workers_admit_the_limit_plus_at_most_two_syncs_of_the_other(
    redis: RedisServer,
) -> None:
    """Deterministic ticks: per round each worker gets k requests, then A syncs, then B. A's view
    of B lags by B's last two rounds (B pushed after A read), B's of A by one: the bound is
    ``limit + 2k``, and after the syncs both know exactly what the other admitted."""
    limit, k = 50, 5

    async def scenario() -> None:
        a, b = make(redis), make(redis)
        replica = make(redis, prefix="elsewhere")  # another deployment's prefix
        await started(a, b, replica)
        await window_start(2.0, 1.5)
        admitted = {"a": 0, "b": 0}
        for _ in range(limit // k):
            for name, worker in (("a", a), ("b", b)):
                for _ in range(k):
                    admitted[name] += worker.hit("1.2.3.4", time.time()).allowed
            await a.sync()
            await b.sync()
        total = admitted["a"] + admitted["b"]
        assert limit <= total <= limit + 2 * k, admitted
        await a.sync()  # A reads what B pushed last
        window = int(time.time() // 2.0)
        key = f"portway:rl:api:{window}:1.2.3.4"
        assert redis.get_int(key) == total
        assert others(a, "1.2.3.4") == (0, admitted["b"])
        assert others(b, "1.2.3.4") == (0, admitted["a"])
        assert not a.hit("1.2.3.4", time.time()).allowed
        # The counter expires two windows (and a bit) after its last write.
        ttl = int(redis.command("TTL", key)[1:].strip())
        assert 0 < ttl <= math.ceil(2 * 2.0) + 2
        # Another prefix is another set of counters: the full limit there.
        assert all(replica.hit("1.2.3.4", time.time()).allowed for _ in range(limit))
        await replica.sync()
        assert redis.get_int(f"elsewhere:rl:api:{window}:1.2.3.4") == limit
        # A key longer than 200 bytes is stored under its hash.
        long_key = "k" * 300
        assert a.hit(long_key, time.time()).allowed
        await a.sync()
        assert redis.get_int(
            f"portway:rl:api:{window}:{redis_key_name(long_key).decode()}"
        ) == 1  # fmt: skip
        state = a.state(time.time())
        assert state["store"] == "redis"
        assert state["redis"]["up"] is True and state["redis"]["sync_errors"] == 0
        assert 0 <= state["redis"]["last_sync_age_seconds"] < 5
        await stopped(a, b, replica)

    run(scenario)


def test_background_syncs_keep_two_workers_near_one_limit(redis: RedisServer) -> None:
    """Real time, real ticks (every 50 ms): both workers send 50 requests, alternating every
    10 ms. What went over the limit is at most what the other admitted in twice (longest gap
    between syncs + longest sync), as measured, which here is a handful, far from 50."""
    limit = 50

    async def scenario() -> None:
        a = make(redis, interval=0.05, cls=TimedWindow)
        b = make(redis, interval=0.05, cls=TimedWindow)
        await started(a, b)
        await window_start(2.0, 1.5)
        admitted: dict[str, list[float]] = {"a": [], "b": []}
        for _ in range(limit):
            for name, window in (("a", a), ("b", b)):
                if window.hit("5.6.7.8", time.time()).allowed:
                    admitted[name].append(time.monotonic())
            await asyncio.sleep(0.01)
        syncs = [s for w in (a, b) for s in w.syncs]  # type: ignore[attr-defined]
        assert syncs, "no background sync ran"
        starts = sorted(start for start, _ in syncs)
        longest_gap = max((y - x for x, y in itertools.pairwise(starts)), default=0.0)
        longest_sync = max(end - start for start, end in syncs)
        span = 2 * (max(longest_gap, 0.05) + longest_sync)

        def most_within(times: list[float]) -> int:
            return max((sum(1 for t in times if s <= t <= s + span) for s in times), default=0)

        total = len(admitted["a"]) + len(admitted["b"])
        bound = limit + max(most_within(admitted["a"]), most_within(admitted["b"]))
        assert limit <= total <= bound, (total, bound, span)
        assert total < 2 * limit  # sharing worked: not each worker's full limit
        await stopped(a, b)

    run(scenario)


def test_redis_outage_falls_back_to_local_counts_and_heals(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopped: decisions stay immediate, own counts plus the last known totals limit, the state
    says down; restarted empty on the same port: up again, and every worker's counts (including
    the hits admitted during the outage) are pushed again, so the totals converge."""
    per, limit = 600.0, 100
    caplog.set_level(logging.INFO, logger="portway.policies")

    async def scenario() -> None:
        a = make(redis, per=per, limit=limit, interval=0.05, timeout=0.2)
        b = make(redis, per=per, limit=limit, interval=0.05, timeout=0.2)
        await started(a, b)
        await window_start(per, 10.0)
        for _ in range(20):
            assert a.hit("k", time.time()).allowed
            assert b.hit("k", time.time()).allowed
        await until(lambda: others(a, "k") == (0, 20) and others(b, "k") == (0, 20))

        redis.stop()
        await until(lambda: not a.state(time.time())["redis"]["up"])
        await until(lambda: b.state(time.time())["redis"]["sync_errors"] > 1)
        slowest = 0.0
        verdicts = []
        for _ in range(80):
            started_at = time.perf_counter()
            verdicts.append(a.hit("k", time.time()))
            slowest = max(slowest, time.perf_counter() - started_at)
            await asyncio.sleep(0)
        assert slowest < 0.01  # in memory: no connection attempt on the request path
        # Own 20 + B's last known 20: 60 more, then refused (local limiting with what it knew).
        assert sum(v.allowed for v in verdicts) == limit - 40
        state = a.state(time.time())["redis"]
        assert state["up"] is False and state["sync_errors"] > 0 and state["last_error"]
        assert state["last_sync_age_seconds"] is not None
        for _ in range(5):
            assert b.hit("k", time.time()).allowed  # B: 25 of its own now

        redis.start()  # same port, no keys
        await until(lambda: a.up and b.up, timeout=8.0)
        window = int(time.time() // per)
        await until(lambda: redis.get_int(f"portway:rl:api:{window}:k") == 80 + 25)
        await until(lambda: others(a, "k") == (0, 25) and others(b, "k") == (0, 80))
        assert not b.hit("k", time.time()).allowed  # 105 >= 100 everywhere again
        await stopped(a, b)

    run(scenario)
    down = [r for r in caplog.records if "unreachable" in r.getMessage()]
    back = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(down) == 2 and len(back) == 2, caplog.text  # once per window, not per attempt
    assert all(r.name == "portway.policies" for r in down + back)
    assert any("lost the shared counts" in r.getMessage() for r in caplog.records)


def test_a_redis_that_stops_answering_is_cut_off_by_the_timeout(redis: RedisServer) -> None:
    """SIGSTOP: connections hang rather than fail. Each sync gives up after ``timeout``; hits
    meanwhile go on in memory; SIGCONT and the window is up again."""

    async def scenario() -> None:
        w = make(redis, per=600.0, limit=1000, interval=0.05, timeout=0.2)
        await started(w)
        assert w.hit("k", time.time()).allowed
        await until(lambda: w.up)
        redis.pause()
        try:
            for _ in range(10):
                assert w.hit("k", time.time()).allowed
            await until(lambda: w.sync_errors > 0, timeout=3.0)
            assert not w.up and w.last_error is not None
            assert "Timeout" in w.last_error
        finally:
            redis.resume()
        await until(lambda: w.up, timeout=5.0)
        window = int(time.time() // 600.0)
        # The pipeline that timed out may have run when the server resumed: at most that one
        # batch counts twice (the PING probe keeps later ones from being queued).
        key = f"portway:rl:api:{window}:k"
        await until(lambda: (redis.get_int(key) or 0) >= 11)
        await asyncio.sleep(0.3)
        assert 11 <= (redis.get_int(key) or 0) <= 21
        await stopped(w)

    run(scenario)
    # A connection left open (as one was, about 1 run in 10, when ``close`` cancelled the task
    # while it closed them) would warn here: collected now, the warning fails this test.
    gc.collect()


def test_close_stops_the_task_and_before_the_loop_runs_starts_nothing(
    redis: RedisServer,
) -> None:
    async def scenario() -> None:
        w = make(redis, interval=0.05)
        await started(w)
        assert w.task is not None
        w.close()
        w.close()  # idempotent
        await asyncio.wait_for(asyncio.gather(w.task, return_exceptions=True), 2.0)
        assert w.task.cancelled()

    run(scenario)

    loop = asyncio.new_event_loop()
    try:
        config = RedisConfig(url=redis.url, sync_interval=0.05)
        w = RedisWindow("api", 10, 1.0, 100, config, loop)  # the loop is not running
        assert w.hit("k", time.time()).allowed  # usable at once, locally
        w.close()
        loop.run_until_complete(asyncio.sleep(0.05))
        assert w.task is None
    finally:
        loop.close()
