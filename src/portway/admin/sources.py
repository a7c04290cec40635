"""Where the admin API gets its data: shared memory from other processes, or the gateway it runs in.

* ``BoardSource``: the admin process of ``portway run``. Worker reports come from the stats board,
  the supervisor's reload counters from the board's last slot, health from the health board.
* ``LocalSource``: a single-process ``Gateway`` (tests, the demo) serving the admin API from a
  thread: its one report is taken on the gateway's event loop, so it never reads counters while the
  loop changes them.

``AdminState`` puts a source together with the aggregation; the HTTP handlers only see the state.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from portway.acme.status import read_status
from portway.admin.aggregate import Aggregator, Totals
from portway.admin.metrics import InstanceHealth, MetricsView, registry_for
from portway.admin.report import config_fingerprint
from portway.config.model import Config
from portway.health.board import Board
from portway.health.state import HealthState, Layout
from portway.observability.stats_board import StatsBoard

STALE_AFTER = 5.0  # seconds without a report before a worker no longer counts as ready
LOCAL_TIMEOUT = 5.0  # how long the admin thread waits for the gateway's loop to answer


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user's
    return True


class AdminSource(Protocol):
    def config(self) -> Config: ...

    def reports(self) -> list[dict[str, Any] | None]:
        """One report per worker (None: nothing published yet)."""
        ...

    def control(self) -> dict[str, Any] | None:
        """The supervisor's record (reload counters), if there is a supervisor."""
        ...

    def health(self, config: Config) -> InstanceHealth:
        """States from the health board that follow ``config``; empty when there is none."""
        ...

    def serving(self) -> bool:
        """False while the gateway is not (yet, or any more) serving traffic."""
        ...


class BoardSource:
    """The admin process's view: the boards the supervisor mapped before forking."""

    def __init__(self, config: Config, stats: StatsBoard, board: Board, workers: int) -> None:
        if stats.slots != workers + 1:
            raise ValueError(f"{workers} workers need {workers + 1} stats slots, not {stats.slots}")
        self.current = config  # replaced on SIGHUP by the admin process
        self.stats = stats
        self.board = board
        self.workers = workers

    def config(self) -> Config:
        return self.current

    def reports(self) -> list[dict[str, Any] | None]:
        return [self.stats.read(slot) for slot in range(self.workers)]

    def control(self) -> dict[str, Any] | None:
        return self.stats.read(self.workers)

    def health(self, config: Config) -> InstanceHealth:
        read = self.board.read()
        layout = Layout.from_config(config)
        if read is None or read[0] != layout.fingerprint:
            return {}  # no prober, or it has not caught up with this config yet
        slots = read[1]
        checked = {name for name, s in config.services.items() if s.health_check is not None}
        states: dict[tuple[str, str], HealthState] = {}
        for name, addresses in layout.services:
            if name not in checked:
                continue
            first, _count = layout.spans[name]
            for index, address in enumerate(addresses):
                slot = first + index
                value = slots[slot] if slot < len(slots) else HealthState.UNKNOWN
                states[(name, address)] = HealthState(value)
        return states

    def serving(self) -> bool:
        return True  # the supervisor forks the admin once the listeners are bound


class LocalSource:
    """A gateway in this process: ``report`` and ``serving`` run on its event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        config: Callable[[], Config],
        report: Callable[[], dict[str, Any]],
        serving: Callable[[], bool],
    ) -> None:
        self.loop = loop
        self._config = config
        self._report = report
        self._serving = serving

    def _on_loop(self, fn: Callable[[], Any]) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the admin thread, which answers 500
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(LOCAL_TIMEOUT)

    def config(self) -> Config:
        return self._config()  # one attribute read of the live snapshot: safe from any thread

    def reports(self) -> list[dict[str, Any] | None]:
        if self.loop.is_closed():
            return [None]
        report: dict[str, Any] = self._on_loop(self._report)
        return [report]

    def control(self) -> dict[str, Any] | None:
        return None

    def health(self, config: Config) -> InstanceHealth:
        return {}  # the local prober sets the endpoints; their flags are in the report

    def serving(self) -> bool:
        return not self.loop.is_closed() and bool(self._on_loop(self._serving))


@dataclass(frozen=True, slots=True)
class Observation:
    """One consistent look at everything the endpoints show."""

    config: Config
    totals: Totals
    reports: list[dict[str, Any] | None]
    health: InstanceHealth


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str
    workers: list[dict[str, Any]]


def _has_acme(config: Config) -> bool:
    return any(
        c.acme for lc in config.listeners if lc.tls is not None for c in lc.tls.certificates
    )


class AdminState:
    """A source, the aggregation over time, and the metrics registry; shared by handler threads."""

    def __init__(self, source: AdminSource) -> None:
        self.source = source
        self.aggregator = Aggregator()
        self.registry = registry_for(self.metrics_view)

    def observe(self) -> Observation:
        config = self.source.config()
        totals, reports = self.aggregator.observe(self.source.reports(), self.source.control())
        return Observation(config, totals, reports, self.source.health(config))

    def metrics_view(self) -> MetricsView:
        seen = self.observe()
        instances = tuple(
            (name, instance.address)
            for name, service in sorted(seen.config.services.items())
            for instance in service.instances
        )
        acme = read_status(seen.config.acme) if _has_acme(seen.config) else []
        return MetricsView(seen.totals, seen.health, instances, tuple(acme))

    def readiness(self) -> Readiness:
        """Ready when serving and every worker reported, recently, serving the current config."""
        if not self.source.serving():
            return Readiness(False, "not serving", [])
        seen = self.observe()
        current = config_fingerprint(seen.config)
        now = time.time()
        workers: list[dict[str, Any]] = []
        reasons: list[str] = []
        for slot, report in enumerate(seen.reports):
            if report is None:
                workers.append({"worker": slot, "ready": False})
                reasons.append(f"worker {slot} has not reported")
                continue
            age = now - float(report.get("time", 0.0))
            same = report.get("config_fingerprint") == current
            pid = report.get("pid")
            # A worker that died leaves its last report behind until its replacement publishes.
            fresh = age <= STALE_AFTER and isinstance(pid, int) and _running(pid)
            workers.append(
                {
                    "worker": slot,
                    "pid": report.get("pid"),
                    "generation": report.get("generation"),
                    "current_config": same,
                    "report_age_seconds": round(age, 3),
                    "requests": sum(int(row[-1]) for row in report.get("requests", ())),
                    "ready": same and fresh,
                }
            )
            if not same:
                reasons.append(f"worker {slot} serves another config")
            elif not fresh:
                reasons.append(f"worker {slot} (pid {pid}) is not running or not reporting")
        return Readiness(not reasons, "; ".join(reasons) or "ready", workers)
