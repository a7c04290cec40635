"""Active health checks end to end: an instance failing its check stops getting traffic, and gets it
back once it recovers; with ``portway run --workers 2`` one process does the checking for both."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise

import pytest

from tests.e2e.gateway import GatewayThread
from tests.support.client import request
from tests.support.health_backend import HealthBackend
from tests.support.processes import run_portway

INTERVAL = 0.1
UNHEALTHY_THRESHOLD = 2
HEALTHY_THRESHOLD = 2
CHECK = {
    "path": "/healthz",
    "interval": f"{INTERVAL}s",
    "timeout": "500ms",
    "jitter": 0,
    "unhealthy_threshold": UNHEALTHY_THRESHOLD,
    "healthy_threshold": HEALTHY_THRESHOLD,
}
SLACK = 0.35  # the first check may be up to one interval away; scheduling on a loaded machine
WORKER_READ = 0.2  # a worker reads the board this often (health.worker.READ_INTERVAL)


@pytest.fixture
def pair() -> Iterator[tuple[HealthBackend, HealthBackend]]:
    with HealthBackend("a") as a, HealthBackend("b") as b:
        yield a, b


def config_text(a: HealthBackend, b: HealthBackend, check: dict[str, object] | None) -> str:
    health = f", health_check: {json.dumps(check)}" if check else ""
    return (
        'listeners: [{address: "127.0.0.1:0"}]\n'
        f"services:\n  web: {{instances: [{a.address!r}, {b.address!r}]{health}}}\n"
        "routes:\n  - {path: /, service: web}\n"
    )


def answered_by(port: int, count: int) -> Counter[str]:
    """Which backend answered each of ``count`` requests, each on a fresh connection (so the
    kernel spreads them over all the workers)."""
    names: Counter[str] = Counter()
    for i in range(count):
        response = request(port, "GET", f"/work/{i}")
        assert response.status == 200, response
        names[response.body.decode()] += 1
    return names


def wait_until_answered_by(port: int, name: str, timeout: float) -> float:
    """Seconds until a request is answered by ``name``; fails after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if answered_by(port, 4)[name]:
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"no request reached {name} within {timeout}s")


def fail_and_recover(port: int, b: HealthBackend, read_delay: float) -> None:
    """Both serve; b fails its check and gets nothing; b recovers and serves again."""
    # Round robin over two healthy instances (per worker, so not exactly half with several).
    assert min(answered_by(port, 20)[name] for name in "ab") >= 5

    b.health_status = 503
    time.sleep(INTERVAL * UNHEALTHY_THRESHOLD + INTERVAL + read_delay + SLACK)
    assert answered_by(port, 30) == {"a": 30}

    b.health_status = 200
    took = wait_until_answered_by(port, "b", timeout=3.0)
    assert took < INTERVAL * HEALTHY_THRESHOLD + INTERVAL + read_delay + SLACK + 0.2
    assert set(answered_by(port, 20)) == {"a", "b"}


def test_in_process_gateway_takes_a_failing_instance_out_and_back(
    pair: tuple[HealthBackend, HealthBackend],
) -> None:
    a, b = pair
    config = {
        "services": {"web": {"instances": [a.address, b.address], "health_check": CHECK}},
        "routes": [{"path": "/", "service": "web"}],
    }
    with GatewayThread(config) as gateway:
        time.sleep(INTERVAL * 2)  # every instance checked once
        fail_and_recover(gateway.port, b, read_delay=0.0)


def test_two_workers_share_one_prober(pair: tuple[HealthBackend, HealthBackend]) -> None:
    a, b = pair
    with run_portway(config_text(a, b, CHECK), workers=2) as gw:
        gw.wait_for_stderr(r"listening on")
        time.sleep(INTERVAL * 3)
        assert len(gw.worker_pids()) == 3  # two workers, one prober (the admin process aside)

        # One check per interval per instance: one prober, not one per worker.
        window_start = time.monotonic()
        time.sleep(1.0)
        checks = a.checks_since(window_start)
        assert 6 <= len(checks) <= 12, f"{len(checks)} checks in 1 s at a {INTERVAL}s interval"
        assert {agent for _, agent in checks} == {"portway-health"}
        gaps = [later[0] - earlier[0] for earlier, later in pairwise(checks)]
        assert min(gaps) > INTERVAL * 0.8, gaps  # never two checks close together

        fail_and_recover(gw.port, b, read_delay=WORKER_READ)
        gw.wait_for_stderr(rf"service web instance {b.address} is unhealthy: status 503 not in")
        gw.wait_for_stderr(rf"service web instance {b.address} is healthy: status 200")
        assert gw.stop() == 0


def test_a_killed_prober_is_restarted_and_resumes_from_the_board(
    pair: tuple[HealthBackend, HealthBackend],
) -> None:
    a, b = pair
    b.health_status = 503
    with run_portway(config_text(a, b, CHECK), workers=1) as gw:
        found = gw.wait_for_stderr(r"health prober \(pid (\d+)\) checks 2 instances")
        prober = int(found.group(1))
        gw.wait_for_stderr(rf"service web instance {b.address} is unhealthy")
        time.sleep(WORKER_READ + 0.05)
        assert answered_by(gw.port, 10) == {"a": 10}

        os.kill(prober, signal.SIGKILL)
        gw.wait_for_stderr(rf"health prober \(pid {prober}\) exited \(killed by SIGKILL\)")
        gw.wait_for_stderr(r"health prober restarted as pid")
        # The new prober starts from the states on the board: b stays out, not even briefly back
        # until its new prober has counted enough failures.
        for _ in range(6):
            assert answered_by(gw.port, 5) == {"a": 5}
            time.sleep(0.05)
        assert b.checks_since(time.monotonic() - 0.3)  # and it is being checked again


def test_a_reload_that_adds_a_health_check_starts_the_prober(
    pair: tuple[HealthBackend, HealthBackend],
) -> None:
    a, b = pair
    b.health_status = 503
    with run_portway(config_text(a, b, None), workers=2) as gw:
        assert set(answered_by(gw.port, 10)) == {"a", "b"}
        assert b.checks_since(0) == []
        gw.config_path.write_text(config_text(a, b, CHECK))
        gw.proc.send_signal(signal.SIGHUP)
        gw.wait_for_stderr(r"health prober started as pid")
        gw.wait_for_stderr(rf"service web instance {b.address} is unhealthy")
        time.sleep(WORKER_READ + 0.05)
        assert answered_by(gw.port, 20) == {"a": 20}
