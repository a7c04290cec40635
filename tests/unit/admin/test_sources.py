"""What the admin process reads off the boards: readiness per worker, health per instance."""

from __future__ import annotations

import os
import time
from typing import Any

from portway.admin.report import config_fingerprint
from portway.admin.sources import AdminState, BoardSource
from portway.config.model import Config
from portway.health.board import Board
from portway.health.sinks import BoardSink
from portway.health.state import HealthState, Layout
from portway.observability.stats_board import StatsBoard

CONFIG = Config.model_validate(
    {
        "services": {
            "checked": {
                "instances": ["10.0.0.1:80", "10.0.0.2:80"],
                "health_check": {"path": "/healthz"},
            },
            "plain": {"instances": ["10.0.1.1:80"]},
        },
        "routes": [{"path": "/", "service": "plain"}],
    }
)


def report(pid: int, fingerprint: str, age: float = 0.0) -> dict[str, Any]:
    return {
        "pid": pid,
        "time": time.time() - age,
        "config_fingerprint": fingerprint,
        "requests": [["r", "plain", "GET", "2xx", 2]],
        "instances": [],
    }


def dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_ready_only_when_every_worker_runs_reports_and_serves_the_current_config() -> None:
    stats = StatsBoard(3, slot_size=4096)  # two workers and the supervisor
    state = AdminState(BoardSource(CONFIG, stats, Board(capacity=8), workers=2))
    readiness = state.readiness()
    assert not readiness.ready
    assert readiness.reason == "worker 0 has not reported; worker 1 has not reported"

    current, me = config_fingerprint(CONFIG), os.getpid()
    stats.publish(0, report(me, current))
    stats.publish(1, report(me, "an older config"))
    assert state.readiness().reason == "worker 1 serves another config"

    gone = dead_pid()
    stats.publish(1, report(gone, current))
    assert state.readiness().reason == f"worker 1 (pid {gone}) is not running or not reporting"
    stats.publish(1, report(me, current, age=30.0))
    assert state.readiness().reason == f"worker 1 (pid {me}) is not running or not reporting"

    stats.publish(1, report(me, current))
    readiness = state.readiness()
    assert readiness.ready and readiness.reason == "ready"
    assert [w["requests"] for w in readiness.workers] == [2, 2]
    assert all(w["current_config"] and w["ready"] for w in readiness.workers)


def test_health_comes_from_the_board_only_for_checked_services_of_the_same_config() -> None:
    board = Board(capacity=8)
    source = BoardSource(CONFIG, StatsBoard(2, slot_size=1024), board, workers=1)
    assert source.health(CONFIG) == {}  # no prober has laid the board out yet
    sink = BoardSink(board)
    sink.reset(Layout.from_config(CONFIG), {("checked", 1): HealthState.UNHEALTHY})
    assert source.health(CONFIG) == {
        ("checked", "10.0.0.1:80"): HealthState.UNKNOWN,
        ("checked", "10.0.0.2:80"): HealthState.UNHEALTHY,
    }
    other = CONFIG.model_copy(update={"services": {"plain": CONFIG.services["plain"]}})
    assert source.health(other) == {}  # the board follows another config: nothing is read


def test_reload_counters_come_from_the_supervisor_slot() -> None:
    stats = StatsBoard(2, slot_size=1024)
    state = AdminState(BoardSource(CONFIG, stats, Board(capacity=8), workers=1))
    stats.publish(0, report(os.getpid(), config_fingerprint(CONFIG)) | {"reloads_ok": 5})
    stats.publish(
        1, {"role": "supervisor", "reloads_ok": 2, "reloads_failed": 1, "last_reload_ok": 12.5}
    )
    totals = state.observe().totals
    assert (totals.reloads_ok, totals.reloads_failed, totals.last_reload_ok) == (2, 1, 12.5)
