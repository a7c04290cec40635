"""Active health thresholds, after Envoy's active health checking: ``unhealthy_threshold``
consecutive failures mark a healthy host unhealthy, ``healthy_threshold`` consecutive successes
mark an unhealthy host healthy, and a result agreeing with the state restarts the count."""

from __future__ import annotations

import pytest

from portway.balancing import Endpoint, HealthThresholds, ServiceHealth
from tests.unit.balancing.support import make_endpoints


def test_unhealthy_after_the_threshold_of_consecutive_failures() -> None:
    state = HealthThresholds(healthy_threshold=2, unhealthy_threshold=3)
    assert state.healthy is True and state.streak == 0
    assert state.record(False) is None
    assert state.streak == 1
    assert state.record(False) is None
    assert state.streak == 2
    assert state.record(False) is False
    assert (state.healthy, state.streak) == (False, 0)


def test_healthy_again_after_the_threshold_of_consecutive_successes() -> None:
    state = HealthThresholds(2, 3, initially_healthy=False)
    assert state.record(True) is None
    assert state.record(True) is True
    assert (state.healthy, state.streak) == (True, 0)


def test_results_agreeing_with_the_state_are_not_transitions() -> None:
    state = HealthThresholds(2, 3)
    assert [state.record(True) for _ in range(5)] == [None] * 5
    assert state.healthy and state.streak == 0
    state = HealthThresholds(2, 3, initially_healthy=False)
    assert [state.record(False) for _ in range(5)] == [None] * 5
    assert not state.healthy


def test_flapping_never_reaches_a_threshold() -> None:
    state = HealthThresholds(2, 3)
    # fail, fail, ok restarts the count: two more failures are not enough.
    results = [state.record(ok) for ok in (False, False, True, False, False, True, False, False)]
    assert results == [None] * 8
    assert state.healthy and state.streak == 2
    assert state.record(False) is False
    # Now unhealthy: ok, fail, ok, fail ... never two successes in a row.
    assert [state.record(ok) for ok in (True, False) * 5] == [None] * 10
    assert not state.healthy
    assert state.record(True) is None
    assert state.record(True) is True


def test_thresholds_of_one_flip_on_every_change() -> None:
    state = HealthThresholds(1, 1)
    assert [state.record(ok) for ok in (False, False, True, True, False)] == [
        False,
        None,
        True,
        None,
        False,
    ]


@pytest.mark.parametrize(("healthy", "unhealthy"), [(0, 3), (2, 0), (-1, -1)])
def test_thresholds_below_one_are_rejected(healthy: int, unhealthy: int) -> None:
    with pytest.raises(ValueError, match="thresholds must be at least 1"):
        HealthThresholds(healthy, unhealthy)


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_service_health_applies_transitions_to_endpoints() -> None:
    endpoints = make_endpoints(1, 1)
    health = ServiceHealth(endpoints, healthy_threshold=2, unhealthy_threshold=2)
    first, second = endpoints
    assert health.record(first, False) is None
    assert first.healthy
    assert health.record(first, False) is False
    assert first.healthy is False and second.healthy is True
    assert not first.available(0.0)
    assert health.record(first, True) is None
    assert health.record(first, True) is True
    assert first.healthy is True
    assert first.ramp_start == 0.0  # no slow start configured
    assert health.state(first).healthy and health.state(first).streak == 0


def test_recovery_starts_slow_start() -> None:
    clock = FakeClock(500.0)
    endpoints = make_endpoints(1)
    health = ServiceHealth(endpoints, 1, 1, slow_start=30.0, clock=clock)
    (only,) = endpoints
    health.record(only, False)
    assert only.ramp_start == 0.0  # going down starts nothing
    clock.now = 530.0
    assert health.record(only, True) is True
    assert only.ramp_start == 530.0
    health.record(only, False)
    assert health.record(only, True, now=600.0) is True
    assert only.ramp_start == 600.0


def test_endpoints_start_in_their_current_state() -> None:
    # Endpoints carried over a reload keep the health they had.
    endpoints = make_endpoints(1, 1)
    endpoints[1].healthy = False
    health = ServiceHealth(endpoints, healthy_threshold=1, unhealthy_threshold=1)
    assert health.state(endpoints[1]).healthy is False
    assert health.record(endpoints[1], True) is True
    assert endpoints[1].healthy


def test_service_health_rejects_foreign_endpoints_and_bad_input() -> None:
    health = ServiceHealth(make_endpoints(1), 1, 1)
    with pytest.raises(ValueError, match="is not one of this service's"):
        health.record(Endpoint("10.9.9.9", 80), True)
    with pytest.raises(ValueError, match="is not one of this service's"):
        health.state(Endpoint("10.9.9.9", 80, index=3))
    with pytest.raises(ValueError, match="has index 1 but is at position 0"):
        ServiceHealth(make_endpoints(1, 1)[::-1], 1, 1)
    with pytest.raises(ValueError, match="slow_start"):
        ServiceHealth(make_endpoints(1), 1, 1, slow_start=-5.0)
    with pytest.raises(ValueError, match="thresholds must be at least 1"):
        ServiceHealth(make_endpoints(1), 0, 1)
