"""The prober: checks every instance of every service with a ``health_check``, each on its schedule.

Each instance has its own timer. The first check comes at a random point of the first interval, so
a config with thousands of instances does not probe them all in the same instant after a start or
a reload; after each check the next one is due ``interval`` plus a random ``jitter`` later (counted
from the end of the check, so a slow instance is never checked twice at once). Results go through
``HealthThresholds`` (consecutive successes / failures) and each transition is logged and handed
to the sink. One prober serves a whole gateway: see ``sinks``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field

from portway.balancing.health import HealthThresholds
from portway.config.model import Config
from portway.config.resilience import HealthCheckConfig
from portway.config.types import parse_host_port
from portway.health.probe import ProbeResult, probe
from portway.health.sinks import HealthSink
from portway.health.state import HealthState, Layout
from portway.pki import MaterialError
from portway.tls.contexts import UpstreamTls, upstream_tls

log = logging.getLogger("portway.health")


def first_delay(check: HealthCheckConfig, rng: random.Random) -> float:
    """Delay of an instance's first check: anywhere in the first interval, spreading the load."""
    return rng.uniform(0.0, check.interval)


def next_delay(check: HealthCheckConfig, rng: random.Random) -> float:
    """Delay from the end of one check to the start of the next."""
    return check.interval + (rng.uniform(0.0, check.jitter) if check.jitter > 0 else 0.0)


@dataclass(eq=False)
class Target:
    """One checked instance and where its checks stand."""

    service: str
    index: int
    address: str
    check: HealthCheckConfig
    thresholds: HealthThresholds
    state: HealthState = HealthState.UNKNOWN  # as last published
    checks: int = 0
    last: ProbeResult | None = None
    handle: asyncio.TimerHandle | None = field(default=None, repr=False)
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    tls: UpstreamTls | None = field(default=None, repr=False)

    @property
    def healthy(self) -> bool:
        return self.thresholds.healthy

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        if self.task is not None:
            self.task.cancel()


class Prober:
    """Probes the instances of ``config`` on ``loop`` and publishes their states to ``sink``."""

    def __init__(
        self,
        config: Config,
        sink: HealthSink,
        loop: asyncio.AbstractEventLoop,
        rng: random.Random | None = None,
    ) -> None:
        self.sink = sink
        self.loop = loop
        self.rng = rng or random.Random()
        self.config = config
        self.layout = Layout.from_config(config)
        self.targets: dict[tuple[str, str], Target] = {}
        self.running = False

    def start(self) -> None:
        """Publish the layout (resuming states a previous prober left) and schedule every check."""
        if self.running:
            return
        self.running = True
        recalled = self.sink.recall(self.layout)
        self.targets = self._build(self.config, {}, recalled)
        self._publish_layout()
        for target in self.targets.values():
            self._schedule(target, first_delay(target.check, self.rng))

    def reload(self, config: Config) -> None:
        """Follow ``config``: instances that still exist keep their state (and, when their check
        is unchanged, their schedule); new ones are first checked within one interval."""
        self.config = config
        self.layout = Layout.from_config(config)
        old = self.targets
        self.targets = self._build(config, old, {})
        for key, target in old.items():
            if self.targets.get(key) is not target:
                target.cancel()
        self._publish_layout()
        if self.running:
            for target in self.targets.values():
                if target.handle is None and target.task is None:
                    self._schedule(target, first_delay(target.check, self.rng))

    def stop(self) -> None:
        self.running = False
        for target in self.targets.values():
            target.cancel()

    async def close(self) -> None:
        """Stop and wait for the checks in progress to be cancelled."""
        self.stop()
        tasks = [t.task for t in self.targets.values() if t.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    def states(self) -> dict[tuple[str, str], HealthState]:
        """(service, address) -> state as published; for logs and tests."""
        return {key: target.state for key, target in self.targets.items()}

    # -- internals --------------------------------------------------------------------------------

    def _build(
        self,
        config: Config,
        old: dict[tuple[str, str], Target],
        recalled: dict[tuple[str, int], HealthState],
    ) -> dict[tuple[str, str], Target]:
        targets: dict[tuple[str, str], Target] = {}
        for name in sorted(config.services):
            service = config.services[name]
            check = service.health_check
            if check is None:
                continue
            try:
                tls = upstream_tls(service.tls)
            except (MaterialError, OSError) as exc:  # a file changed since the config was read
                log.error("service %s: not checked, its TLS settings cannot be used: %s", name, exc)
                continue
            for index, instance in enumerate(service.instances):
                key = (name, instance.address)
                kept = old.get(key)
                if kept is not None and kept.check == check:
                    kept.index = index
                    kept.tls = tls
                    targets[key] = kept
                    continue
                if kept is not None:  # the check changed: a new schedule, the same state
                    state, healthy = kept.state, kept.healthy
                else:
                    state = recalled.get((name, index), HealthState.UNKNOWN)
                    healthy = state != HealthState.UNHEALTHY
                thresholds = HealthThresholds(
                    check.healthy_threshold, check.unhealthy_threshold, initially_healthy=healthy
                )
                targets[key] = Target(
                    name, index, instance.address, check, thresholds, state, tls=tls
                )
        return targets

    def _publish_layout(self) -> None:
        states = {(t.service, t.index): t.state for t in self.targets.values()}
        self.sink.reset(self.layout, states)

    def _schedule(self, target: Target, delay: float) -> None:
        target.handle = self.loop.call_later(delay, self._launch, target)

    def _launch(self, target: Target) -> None:
        target.handle = None
        target.task = self.loop.create_task(self._check(target))

    async def _check(self, target: Target) -> None:
        host, port = parse_host_port(target.address)
        try:
            result = await probe(host, port, target.check, target.tls)
        except Exception as exc:  # a bug in a check must not end that instance's checks
            log.exception("health check of %s failed unexpectedly", target.address)
            result = ProbeResult(False, f"check error: {exc}")
        target.task = None
        if not self.running or self.targets.get((target.service, target.address)) is not target:
            return  # stopped or removed by a reload while the check ran
        self.record(target, result)
        self._schedule(target, next_delay(target.check, self.rng))

    def record(self, target: Target, result: ProbeResult) -> None:
        """Count one result; log a transition; publish when the shared state changes."""
        target.checks += 1
        target.last = result
        transition = target.thresholds.record(result.ok)
        if transition is not None:
            if transition:
                log.info(
                    "service %s instance %s is healthy: %s",
                    target.service,
                    target.address,
                    result.detail,
                )
            else:
                log.warning(
                    "service %s instance %s is unhealthy: %s",
                    target.service,
                    target.address,
                    result.detail,
                )
        # The first result publishes too (unknown -> healthy): the board then says "checked".
        state = HealthState.HEALTHY if target.healthy else HealthState.UNHEALTHY
        if state != target.state:
            target.state = state
            self.sink.publish(target.service, target.index, target.address, state)
