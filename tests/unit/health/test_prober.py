"""The prober: schedules, thresholds, transitions and reloads, with real checks over loopback."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from portway.config.model import Config
from portway.config.resilience import HealthCheckConfig
from portway.health import Board, BoardSink, EndpointSink, HealthState, Layout, Prober
from portway.health.prober import first_delay, next_delay
from tests.support.backends import refused_port
from tests.support.health_backend import HealthBackend
from tests.unit.health.support import Svc, healthy_flags, services

FAST = {"interval": "50ms", "timeout": "500ms", "jitter": 0, "unhealthy_threshold": 2}


def make_config(instances: dict[str, list[str]], check: dict[str, Any] | None = FAST) -> Config:
    return Config.model_validate(
        {
            "listeners": [{"address": "127.0.0.1:0"}],
            "services": {
                name: {"instances": addrs, **({"health_check": check} if check else {})}
                for name, addrs in instances.items()
            },
            "routes": [{"path": "/", "service": sorted(instances)[0]}],
        }
    )


@pytest.fixture
def pair() -> Iterator[tuple[HealthBackend, HealthBackend]]:
    with HealthBackend("a") as a, HealthBackend("b") as b:
        yield a, b


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> float:
    """Seconds until ``predicate()`` held, polling every 5 ms; fails the test after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, "condition not reached in time"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


# -- scheduling (a seeded generator, no clock needed) -----------------------------------------------


def test_first_checks_spread_over_the_first_interval() -> None:
    check = HealthCheckConfig(interval=10.0)
    rng = random.Random(7)
    delays = [first_delay(check, rng) for _ in range(1000)]
    assert all(0.0 <= d <= 10.0 for d in delays)
    per_second = [sum(1 for d in delays if s <= d < s + 1) for s in range(10)]
    assert min(per_second) > 60, per_second  # ~100 each: no burst at the start


def test_later_checks_come_after_interval_plus_jitter() -> None:
    rng = random.Random(7)
    delays = [next_delay(HealthCheckConfig(interval=5.0, jitter=0.5), rng) for _ in range(500)]
    assert all(5.0 <= d <= 5.5 for d in delays)
    assert max(delays) - min(delays) > 0.4  # really jittered
    assert next_delay(HealthCheckConfig(interval=5.0, jitter=0), rng) == 5.0


def test_start_schedules_every_checked_instance_within_one_interval() -> None:
    addresses = [f"10.0.0.{i}:80" for i in range(1, 201)]
    config = make_config({"big": addresses}, {"interval": "2s", "jitter": 0})
    unchecked = config.services["big"].model_copy(update={"health_check": None})
    config = config.model_copy(update={"services": {**config.services, "unchecked": unchecked}})
    loop = asyncio.new_event_loop()
    try:
        prober = Prober(config, EndpointSink(dict), loop, rng=random.Random(1))
        # Offsets from the clock before start: a pause (GC) during start cannot push one out.
        before = loop.time()
        prober.start()
        assert sorted(s for s, _ in prober.targets) == ["big"] * 200  # "unchecked" has no check
        offsets = [t.handle.when() - before for t in prober.targets.values() if t.handle]
        assert len(offsets) == 200
        assert all(0.0 <= o <= 2.0 + (loop.time() - before) for o in offsets)
        assert sum(1 for o in offsets if o < 1.0) in range(70, 131)  # about half in each half
        prober.stop()
    finally:
        loop.close()


# -- real checks -----------------------------------------------------------------------------------


def test_thresholds_turn_results_into_logged_transitions(
    pair: tuple[HealthBackend, HealthBackend], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = pair
    svcs = services({"web": [a.address, b.address]})
    config = make_config({"web": [a.address, b.address]}, {**FAST, "healthy_threshold": 3})

    async def scenario() -> None:
        prober = Prober(config, EndpointSink(lambda: svcs), asyncio.get_running_loop())
        prober.start()
        await until(lambda: all(s == HealthState.HEALTHY for s in prober.states().values()))
        flipped = time.monotonic()
        b.health_status = 503
        took = await until(lambda: not svcs["web"].endpoints[1].healthy)
        # Exactly unhealthy_threshold failed checks, one interval apart.
        assert len(b.checks_since(flipped)) == 2
        assert 0.05 <= took < 0.5
        assert healthy_flags(svcs) == {"web": [True, False]}
        assert prober.states()[("web", b.address)] == HealthState.UNHEALTHY
        recovered = time.monotonic()
        b.health_status = 200
        await until(lambda: svcs["web"].endpoints[1].healthy)
        assert len(b.checks_since(recovered)) == 3  # healthy_threshold
        await prober.close()

    with caplog.at_level(logging.INFO, logger="portway.health"):
        asyncio.run(scenario())
    messages = [r.getMessage() for r in caplog.records if r.name == "portway.health"]
    assert messages == [
        f"service web instance {b.address} is unhealthy: status 503 not in 200-399",
        f"service web instance {b.address} is healthy: status 200",
    ]
    assert {agent for _, agent in a.checks_since(0)} == {"portway-health"}


def test_a_refused_tcp_check_marks_the_instance_unhealthy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = f"127.0.0.1:{refused_port()}"
    svcs = services({"tcp": [down]})
    config = make_config({"tcp": [down]}, {**FAST, "type": "tcp"})

    async def scenario() -> None:
        prober = Prober(config, EndpointSink(lambda: svcs), asyncio.get_running_loop())
        prober.start()
        await until(lambda: not svcs["tcp"].endpoints[0].healthy)
        await prober.close()

    with caplog.at_level(logging.WARNING, logger="portway.health"):
        asyncio.run(scenario())
    assert f"service tcp instance {down} is unhealthy: connection refused" in caplog.text


def test_reload_keeps_the_state_of_instances_that_remain(
    pair: tuple[HealthBackend, HealthBackend],
) -> None:
    a, b = pair
    b.health_status = 500
    holder: dict[str, dict[str, Svc]] = {"now": services({"web": [a.address, b.address]})}

    async def scenario() -> None:
        config = make_config({"web": [a.address, b.address]})
        prober = Prober(config, EndpointSink(lambda: holder["now"]), asyncio.get_running_loop())
        prober.start()
        await until(lambda: not holder["now"]["web"].endpoints[1].healthy)
        kept = prober.targets[("web", b.address)]

        # b moves to index 0 and a new instance joins: b keeps its state and its schedule, and the
        # new service objects (as a gateway reload builds) get it at once.
        extra = f"127.0.0.1:{refused_port()}"
        holder["now"] = services({"web": [b.address, a.address, extra]})
        prober.reload(make_config({"web": [b.address, a.address, extra]}))
        assert prober.targets[("web", b.address)] is kept and kept.index == 0
        assert healthy_flags(holder["now"]) == {"web": [False, True, True]}
        assert prober.states()[("web", extra)] == HealthState.UNKNOWN

        # A changed check starts new schedules but keeps the states.
        slower = {**FAST, "interval": "80ms"}
        prober.reload(make_config({"web": [b.address, a.address, extra]}, slower))
        assert prober.targets[("web", b.address)] is not kept
        assert prober.states()[("web", b.address)] == HealthState.UNHEALTHY
        assert healthy_flags(holder["now"]) == {"web": [False, True, True]}

        # No check any more: nothing probed, every instance back to unknown, i.e. healthy.
        prober.reload(make_config({"web": [b.address, a.address, extra]}, None))
        assert prober.targets == {}
        assert healthy_flags(holder["now"]) == {"web": [True, True, True]}
        await prober.close()

    asyncio.run(scenario())


def test_a_restarted_prober_resumes_from_the_board(
    pair: tuple[HealthBackend, HealthBackend],
) -> None:
    a, b = pair
    config = make_config({"web": [a.address, b.address]}, {**FAST, "interval": "10s"})
    board = Board(capacity=8)
    BoardSink(board).reset(Layout.from_config(config), {("web", 1): HealthState.UNHEALTHY})
    loop = asyncio.new_event_loop()
    try:
        prober = Prober(config, BoardSink(board), loop)
        prober.start()
        target = prober.targets[("web", b.address)]
        assert target.state == HealthState.UNHEALTHY and not target.thresholds.healthy
        assert prober.targets[("web", a.address)].state == HealthState.UNKNOWN
        svcs = services({"web": [a.address, b.address]})
        board.reader().apply(svcs)
        assert healthy_flags(svcs) == {"web": [True, False]}  # still out, as before the restart
        prober.stop()
    finally:
        loop.close()
