"""Slow start and panic, after Envoy's slow start mode (linear ramp, 10% minimum weight) and panic
threshold (below it, health is disregarded and traffic goes to all hosts)."""

from __future__ import annotations

import random

import pytest

from portway.balancing import accept_during_ramp, available_percent, in_panic, ramp_fraction
from tests.unit.balancing.support import make_endpoints

DRAWS = 10_000
TOLERANCE = 0.03


def test_fraction_is_one_when_slow_start_is_off_or_not_ramping() -> None:
    (endpoint,) = make_endpoints(1)
    assert ramp_fraction(endpoint, 100.0, 0.0) == 1.0
    endpoint.ramp_start = 90.0
    assert ramp_fraction(endpoint, 100.0, 0.0) == 1.0
    assert endpoint.ramp_start == 90.0  # slow start off: nothing to clear
    endpoint.ramp_start = 0.0
    assert ramp_fraction(endpoint, 100.0, 30.0) == 1.0


def test_fraction_grows_linearly_from_a_ten_percent_floor() -> None:
    (endpoint,) = make_endpoints(1)
    endpoint.ramp_start = 100.0
    values = [ramp_fraction(endpoint, 100.0 + t, 20.0) for t in (0, 1, 2, 3, 5, 10, 15, 19)]
    assert values == pytest.approx([0.1, 0.1, 0.1, 0.15, 0.25, 0.5, 0.75, 0.95])
    assert endpoint.ramp_start == 100.0  # still ramping


def test_fraction_is_one_and_the_ramp_cleared_once_the_window_passed() -> None:
    (endpoint,) = make_endpoints(1)
    endpoint.ramp_start = 100.0
    assert ramp_fraction(endpoint, 120.0, 20.0) == 1.0
    assert endpoint.ramp_start == 0.0
    assert ramp_fraction(endpoint, 101.0, 20.0) == 1.0  # cleared: no longer ramping


def test_a_ramp_starting_later_gets_the_floor() -> None:
    (endpoint,) = make_endpoints(1)
    endpoint.ramp_start = 200.0
    assert ramp_fraction(endpoint, 150.0, 20.0) == 0.1


@pytest.mark.parametrize("slow_start", [-1.0, float("nan")])
def test_bad_slow_start_is_rejected(slow_start: float) -> None:
    (endpoint,) = make_endpoints(1)
    endpoint.ramp_start = 1.0
    with pytest.raises(ValueError, match="slow_start"):
        ramp_fraction(endpoint, 2.0, slow_start)


@pytest.mark.parametrize("elapsed", [0.0, 6.0, 15.0, 27.0])
def test_accept_during_ramp_matches_the_fraction(elapsed: float) -> None:
    (endpoint,) = make_endpoints(1)
    endpoint.ramp_start = 100.0
    now = 100.0 + elapsed
    expected = ramp_fraction(endpoint, now, 30.0)  # 0.1, 0.2, 0.5, 0.9
    rng = random.Random(int(elapsed) + 7)
    accepted = sum(accept_during_ramp(endpoint, now, 30.0, rng) for _ in range(DRAWS))
    assert abs(accepted / DRAWS - expected) <= TOLERANCE


def test_accept_without_a_ramp_always_accepts_and_draws_nothing() -> None:
    (endpoint,) = make_endpoints(1)
    rng = random.Random(1)
    state = rng.getstate()
    assert all(accept_during_ramp(endpoint, 5.0, 30.0, rng) for _ in range(100))
    assert rng.getstate() == state


def test_available_percent() -> None:
    endpoints = make_endpoints(1, 1, 1, 1)
    assert available_percent(endpoints, 10.0) == 100.0
    endpoints[0].healthy = False
    endpoints[1].down_until = 11.0  # ejected or backing off until 11
    assert available_percent(endpoints, 10.0) == 50.0
    assert available_percent(endpoints, 11.0) == 75.0
    assert available_percent([], 10.0) == 0.0


def test_panic_at_one_of_four_not_at_two_of_four() -> None:
    endpoints = make_endpoints(1, 1, 1, 1)
    endpoints[0].healthy = False
    endpoints[1].healthy = False
    assert not in_panic(endpoints, 10.0, 50)  # 50% is not below 50%
    endpoints[2].down_until = 20.0
    assert in_panic(endpoints, 10.0, 50)  # 25%
    assert not in_panic(endpoints, 20.0, 50)  # the back-off ended: 50% again


def test_panic_threshold_zero_is_off_and_no_endpoints_is_no_panic() -> None:
    endpoints = make_endpoints(1, 1)
    for endpoint in endpoints:
        endpoint.healthy = False
    assert not in_panic(endpoints, 10.0, 0)
    assert in_panic(endpoints, 10.0, 1)
    assert not in_panic([], 10.0, 50)


@pytest.mark.parametrize("threshold", [-1, 101, float("nan")])
def test_panic_threshold_out_of_range_is_rejected(threshold: float) -> None:
    with pytest.raises(ValueError, match="panic threshold must be from 0 to 100"):
        in_panic(make_endpoints(1), 0.0, threshold)
