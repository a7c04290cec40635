"""Active health: turning probe results into healthy / unhealthy transitions, with hysteresis.

The prober (elsewhere, with the I/O) reports each check's result; one failed check does not take
an instance out, nor does one good check put it back. As in Envoy's active health checking, an
instance flips to unhealthy after ``unhealthy_threshold`` consecutive failures and back to healthy
after ``healthy_threshold`` consecutive successes; a result that agrees with the current state
restarts the count, so a flapping instance stays where it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from portway.balancing.endpoint import Endpoint, check_positions, check_slow_start


class HealthThresholds:
    """The health state of one instance as its check results arrive.

    ``streak`` is the number of consecutive results pointing to the other state (failures while
    healthy, successes while unhealthy); it is 0 right after a transition.
    """

    __slots__ = ("healthy", "healthy_threshold", "streak", "unhealthy_threshold")

    def __init__(
        self, healthy_threshold: int, unhealthy_threshold: int, initially_healthy: bool = True
    ) -> None:
        if healthy_threshold < 1 or unhealthy_threshold < 1:
            raise ValueError(
                "thresholds must be at least 1, got "
                f"healthy_threshold={healthy_threshold}, unhealthy_threshold={unhealthy_threshold}"
            )
        self.healthy_threshold = healthy_threshold
        self.unhealthy_threshold = unhealthy_threshold
        self.healthy = initially_healthy
        self.streak = 0

    def record(self, ok: bool) -> bool | None:
        """Count one check result; the new state when it caused a transition, else None."""
        if ok == self.healthy:
            self.streak = 0
            return None
        self.streak += 1
        needed = self.healthy_threshold if ok else self.unhealthy_threshold
        if self.streak < needed:
            return None
        self.healthy = ok
        self.streak = 0
        return ok

    def __repr__(self) -> str:
        state = "healthy" if self.healthy else "unhealthy"
        return (
            f"<HealthThresholds {state} streak={self.streak} "
            f"up={self.healthy_threshold} down={self.unhealthy_threshold}>"
        )


class ServiceHealth:
    """One ``HealthThresholds`` per endpoint of a service, applied to ``endpoint.healthy``.

    Each endpoint starts in the state it has (``endpoint.healthy``), so endpoints carried over a
    reload keep theirs. With ``slow_start`` > 0 an endpoint that recovers starts a ramp
    (``endpoint.ramp_start``) so it is not handed its full share at once.
    """

    __slots__ = ("_clock", "_states", "endpoints", "slow_start")

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        healthy_threshold: int,
        unhealthy_threshold: int,
        *,
        slow_start: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_positions(endpoints)
        check_slow_start(slow_start)
        self.endpoints: tuple[Endpoint, ...] = tuple(endpoints)
        self.slow_start = slow_start
        self._clock = clock
        self._states = [
            HealthThresholds(healthy_threshold, unhealthy_threshold, endpoint.healthy)
            for endpoint in self.endpoints
        ]

    def record(self, endpoint: Endpoint, ok: bool, now: float | None = None) -> bool | None:
        """Count a check result of ``endpoint`` and apply a transition; as ``HealthThresholds``."""
        transition = self.state(endpoint).record(ok)
        if transition is None:
            return None
        endpoint.healthy = transition
        if transition and self.slow_start > 0:
            endpoint.ramp_start = self._clock() if now is None else now
        return transition

    def state(self, endpoint: Endpoint) -> HealthThresholds:
        """The thresholds tracking ``endpoint`` (for logs and status pages)."""
        index = endpoint.index
        if index >= len(self.endpoints) or self.endpoints[index] is not endpoint:
            raise ValueError(f"endpoint {endpoint.address} is not one of this service's")
        return self._states[index]

    def __repr__(self) -> str:
        healthy = sum(1 for state in self._states if state.healthy)
        return f"<ServiceHealth {healthy}/{len(self._states)} healthy>"
