"""Passive outlier detection, after Envoy's outlier detection (arch overview, "Ejection algorithm").

Envoy: consecutive 5xx eject inline once the count is reached; an ejection lasts base_ejection_time
multiplied by the number of ejections, capped by max_ejection_time; max_ejection_percent caps how
many hosts are ejected, but one host may always be; the multiplier decreases while the host stays
in service. Time comes from a fake clock, never from sleeping.
"""

from __future__ import annotations

from typing import Any

import pytest

from portway.balancing import Endpoint, OutlierDetector
from portway.balancing.outlier import DECAY_INTERVAL, max_ejected
from portway.config.resilience import FailureRateConfig, OutlierDetectionConfig
from tests.unit.balancing.support import make_endpoints

START = 1000.0


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def detector(
    count: int = 2,
    *,
    clock: FakeClock | None = None,
    slow_start: float = 0.0,
    **config: Any,
) -> tuple[OutlierDetector, list[Endpoint], FakeClock]:
    clock = clock if clock is not None else FakeClock()
    endpoints = make_endpoints(*([1] * count))
    outliers = OutlierDetector(
        OutlierDetectionConfig(**config), endpoints, slow_start=slow_start, clock=clock
    )
    return outliers, endpoints, clock


# ----------------------------------------------------------------------------- consecutive rules


def test_five_consecutive_5xx_eject_four_do_not() -> None:
    outliers, (first, second), clock = detector()
    assert [outliers.failure(first, "5xx") for _ in range(4)] == [False] * 4
    assert first.available(clock.now) and first.ejections == 0
    assert outliers.failure(first, "5xx") is True
    assert first.ejections == 1
    assert first.down_until == START + 5.0  # default base_ejection_time 5 s
    assert not first.available(clock.now)
    assert second.available(clock.now) and second.ejections == 0
    assert outliers.ejected_count(clock.now) == 1


def test_a_success_between_5xx_restarts_the_count() -> None:
    outliers, (first, _), _clock = detector()
    for _ in range(4):
        assert not outliers.failure(first, "5xx")
    outliers.success(first)
    assert [outliers.failure(first, "5xx") for _ in range(4)] == [False] * 4
    assert outliers.failure(first, "5xx") is True


def test_counters_are_per_endpoint() -> None:
    outliers, (first, second), _clock = detector()
    for _ in range(4):
        outliers.failure(first, "5xx")
        outliers.failure(second, "5xx")
    assert outliers.failure(first, "5xx") is True
    assert second.ejections == 0


def test_a_threshold_of_zero_disables_its_rule() -> None:
    outliers, (first, _), _clock = detector(consecutive_5xx=0, consecutive_connect_failures=0)
    assert not any(outliers.failure(first, "5xx") for _ in range(50))
    assert not any(outliers.failure(first, "connect") for _ in range(50))
    assert first.ejections == 0


def test_one_connect_failure_ejects_by_default() -> None:
    # The default consecutive_connect_failures is 1: a refused connect takes the instance out.
    outliers, (first, _), _clock = detector()
    assert outliers.failure(first, "connect") is True
    assert first.ejections == 1


def test_reset_and_timeout_end_a_connect_run_and_count_as_5xx() -> None:
    """Envoy's default: consecutive_5xx includes locally originated errors (resets, timeouts)."""
    outliers, (first, _), _clock = detector(consecutive_connect_failures=2, consecutive_5xx=3)
    assert not outliers.failure(first, "connect")
    assert not outliers.failure(first, "reset")  # a connection was made: the connect run is over
    assert not outliers.failure(first, "connect")
    assert not outliers.failure(first, "timeout")  # reset, timeout: two of three
    assert outliers.failure(first, "reset") is True
    assert first.ejections == 1


def test_a_5xx_ends_a_connect_run() -> None:
    outliers, (first, _), _clock = detector(consecutive_connect_failures=2, consecutive_5xx=0)
    assert not outliers.failure(first, "connect")
    assert not outliers.failure(first, "5xx")
    assert not outliers.failure(first, "connect")
    assert outliers.failure(first, "connect") is True


def test_connect_failures_leave_a_5xx_run_as_it_is() -> None:
    outliers, (first, _), _clock = detector(consecutive_5xx=3, consecutive_connect_failures=0)
    assert not outliers.failure(first, "5xx")
    assert not outliers.failure(first, "connect")
    assert not outliers.failure(first, "timeout")
    assert outliers.failure(first, "5xx") is True  # 5xx, timeout, 5xx: three in a row


# --------------------------------------------------------------------------------- durations


def test_ejection_time_grows_with_each_ejection_and_is_capped() -> None:
    outliers, (first, _), clock = detector(base_ejection_time=5.0, max_ejection_time=12.0)
    lengths = []
    for _ in range(4):
        assert outliers.failure(first, "connect") is True
        lengths.append(first.down_until - clock.now)
        clock.now = first.down_until  # back at once and failing again at once
        outliers.refresh()
    assert lengths == [5.0, 10.0, 12.0, 12.0]
    assert first.ejections == 4


def test_ejection_lengths_5_10_15_under_the_default_cap() -> None:
    outliers, (first, _), clock = detector(base_ejection_time=5.0)
    lengths = []
    for _ in range(3):
        outliers.failure(first, "connect")
        lengths.append(first.down_until - clock.now)
        clock.now = first.down_until
    assert lengths == [5.0, 10.0, 15.0]


def test_an_ejected_endpoint_ignores_events_until_it_is_back() -> None:
    outliers, (first, _), clock = detector()
    assert outliers.failure(first, "connect") is True
    # In-flight requests that fail after the ejection neither extend it nor count later.
    assert not any(outliers.failure(first, "5xx") for _ in range(10))
    assert first.ejections == 1
    assert first.down_until == START + 5.0
    clock.now = START + 5.0
    outliers.refresh()
    assert [outliers.failure(first, "5xx") for _ in range(4)] == [False] * 4


def test_a_longer_back_off_already_set_is_kept() -> None:
    outliers, (first, _), _clock = detector()
    first.down_until = START + 60.0
    assert outliers.failure(first, "connect") is True
    assert first.down_until == START + 60.0


# ----------------------------------------------------------------------------- ejection cap


@pytest.mark.parametrize(
    ("endpoints", "percent", "cap"),
    [
        (4, 50, 2),
        (3, 50, 1),
        (10, 10, 1),
        (10, 25, 2),
        (1, 1, 1),
        (1, 100, 1),
        (5, 0, 0),
        (4, 100, 4),
    ],
)
def test_max_ejected_is_a_floor_with_at_least_one(endpoints: int, percent: int, cap: int) -> None:
    assert max_ejected(endpoints, percent) == cap


def test_at_most_half_of_four_endpoints_are_ejected() -> None:
    outliers, endpoints, clock = detector(4, max_ejection_percent=50)
    assert [outliers.failure(e, "connect") for e in endpoints] == [True, True, False, False]
    assert outliers.ejected_count(clock.now) == 2
    assert [e.available(clock.now) for e in endpoints] == [False, False, True, True]


def test_over_the_cap_the_failure_counts_and_ejects_once_there_is_room() -> None:
    outliers, endpoints, clock = detector(3, max_ejection_percent=34, consecutive_5xx=2)
    first, second, _third = endpoints
    assert outliers.failure(first, "connect") is True
    assert not outliers.failure(second, "5xx")
    assert not outliers.failure(second, "5xx")  # the threshold is met but the cap is full
    clock.now = first.down_until
    outliers.refresh()
    assert outliers.ejected_count(clock.now) == 0
    assert outliers.failure(second, "5xx") is True  # the count was kept: 3 >= 2


def test_a_single_endpoint_can_be_ejected_with_any_percent() -> None:
    outliers, (only,), clock = detector(1, max_ejection_percent=1)
    assert outliers.failure(only, "connect") is True
    assert not only.available(clock.now)


def test_zero_percent_never_ejects() -> None:
    outliers, endpoints, clock = detector(4, max_ejection_percent=0)
    for endpoint in endpoints:
        assert not any(outliers.failure(endpoint, "connect") for _ in range(10))
    assert outliers.ejected_count(clock.now) == 0
    assert all(e.ejections == 0 and e.available(clock.now) for e in endpoints)


# ----------------------------------------------------------------------------- failure rate


def rate_detector(
    threshold: float, minimum_requests: int, window: float = 10.0
) -> tuple[OutlierDetector, Endpoint, FakeClock]:
    # Consecutive rules off so only the rate decides.
    outliers, (first, _), clock = detector(
        consecutive_5xx=0,
        consecutive_connect_failures=0,
        failure_rate=FailureRateConfig(
            threshold=threshold, minimum_requests=minimum_requests, window=window
        ),
    )
    return outliers, first, clock


def test_failure_rate_ejects_at_exactly_the_threshold() -> None:
    outliers, first, _clock = rate_detector(0.5, 10)
    for _ in range(5):
        outliers.success(first)
    assert [outliers.failure(first, "5xx") for _ in range(4)] == [False] * 4  # 4 of 9
    assert outliers.failure(first, "reset") is True  # 5 of 10 = 0.5
    assert first.ejections == 1


def test_failure_rate_below_the_threshold_does_not_eject() -> None:
    outliers, first, _clock = rate_detector(0.3, 10)
    for _ in range(8):
        outliers.success(first)
    # 1 of 9 (too few requests), 2 of 10, 3 of 11 are below 0.3; 4 of 12 is above.
    assert [outliers.failure(first, "timeout") for _ in range(4)] == [False, False, False, True]


def test_failure_rate_threshold_is_inclusive_for_a_decimal_share() -> None:
    outliers, first, _clock = rate_detector(0.3, 10)
    for _ in range(7):
        outliers.success(first)
    assert [outliers.failure(first, "5xx") for _ in range(3)] == [False, False, True]  # 3 of 10


def test_failure_rate_needs_minimum_requests() -> None:
    outliers, first, _clock = rate_detector(0.5, 10)
    assert [outliers.failure(first, "5xx") for _ in range(9)] == [False] * 9  # 100% of 9
    assert outliers.failure(first, "5xx") is True  # the tenth request


def test_failure_rate_counts_every_kind() -> None:
    outliers, first, _clock = rate_detector(1.0, 4)
    assert [outliers.failure(first, kind) for kind in ("5xx", "connect", "reset", "timeout")] == [
        False,
        False,
        False,
        True,
    ]


def test_window_forgets_old_failures() -> None:
    outliers, first, clock = rate_detector(0.5, 4, window=10.0)
    for _ in range(3):
        outliers.failure(first, "reset")
    clock.now = START + 10.0  # ten 1 s buckets later: all of them dropped
    outliers.success(first)
    assert not outliers.failure(first, "reset")
    assert not outliers.failure(first, "reset")  # 2 of 3: below minimum_requests
    assert first.ejections == 0


def test_window_still_holds_failures_within_it() -> None:
    outliers, first, clock = rate_detector(0.5, 4, window=10.0)
    for _ in range(3):
        outliers.failure(first, "reset")
    clock.now = START + 9.0  # still in the window
    outliers.success(first)
    assert outliers.failure(first, "reset") is True  # 4 of 5


def test_ejection_clears_the_window() -> None:
    outliers, first, clock = rate_detector(0.5, 4)
    for _ in range(4):
        outliers.failure(first, "reset")
    assert first.ejections == 1
    clock.now = first.down_until
    outliers.refresh()
    assert [outliers.failure(first, "reset") for _ in range(3)] == [False] * 3


# ----------------------------------------------------------------------- refresh and decay


def test_refresh_restores_after_the_ejection_and_starts_slow_start() -> None:
    outliers, (first, _), _clock = detector(slow_start=30.0)
    outliers.failure(first, "connect")
    # The ramp is set to begin the moment the ejection ends, without waiting for a refresh.
    assert first.ramp_start == START + 5.0
    outliers.refresh(START + 4.9)
    assert outliers.ejected_count(START + 4.9) == 1
    outliers.refresh(START + 5.0)
    assert outliers.ejected_count(START + 5.0) == 0
    assert first.available(START + 5.0)
    assert first.ramp_start == START + 5.0
    outliers.refresh(START + 6.0)
    assert first.ramp_start == START + 5.0  # a later refresh does not restart the ramp


def test_refresh_without_slow_start_leaves_ramp_start() -> None:
    outliers, (first, _), clock = detector()
    outliers.failure(first, "connect")
    clock.now = START + 5.0
    outliers.refresh()  # the clock's time
    assert outliers.ejected_count() == 0
    assert first.ramp_start == 0.0


def test_ejections_decay_one_per_interval_back_in_service() -> None:
    outliers, (first, _), clock = detector(base_ejection_time=5.0)
    outliers.failure(first, "connect")
    clock.now = first.down_until
    outliers.failure(first, "connect")
    back = first.down_until  # START + 15
    assert first.ejections == 2
    outliers.refresh(back + DECAY_INTERVAL - 0.1)
    assert first.ejections == 2
    outliers.refresh(back + DECAY_INTERVAL)
    assert first.ejections == 1
    outliers.refresh(back + 2 * DECAY_INTERVAL + 5.0)
    assert first.ejections == 0
    clock.now = back + 100.0
    outliers.failure(first, "connect")
    assert first.down_until - clock.now == 5.0  # back to the base length


def test_decay_counts_time_not_refresh_calls() -> None:
    outliers, (first, _), clock = detector(base_ejection_time=5.0)
    for _ in range(3):
        outliers.failure(first, "connect")
        clock.now = first.down_until
    assert first.ejections == 3
    for step in range(1, 21):  # refreshed every 0.5 s for 10 s: one decrement
        outliers.refresh(clock.now + step * 0.5)
    assert first.ejections == 2
    outliers.refresh(clock.now + 30.0)  # one late refresh catches up
    assert first.ejections == 0


# ----------------------------------------------------------------------- disabled, describe


def test_disabled_detection_is_a_no_op() -> None:
    outliers, (first, _), clock = detector(enabled=False)
    assert not any(outliers.failure(first, "connect") for _ in range(10))
    assert not any(outliers.failure(first, "5xx") for _ in range(10))
    outliers.success(first)
    outliers.refresh()
    assert outliers.ejected_count(clock.now) == 0
    assert first.ejections == 0 and first.down_until == 0.0
    assert outliers.describe(first) == "outlier detection off"


def test_describe() -> None:
    outliers, (first, _), clock = detector(base_ejection_time=5.0)
    assert outliers.describe(first) == "not ejected"
    for _ in range(5):
        outliers.failure(first, "5xx")
    clock.now = START + 1.8
    assert (
        outliers.describe(first)
        == "ejected 1 time, back in 3.2s: 5 consecutive 5xx, resets or timeouts"
    )
    clock.now = first.down_until
    outliers.failure(first, "connect")
    assert outliers.describe(first) == (
        "ejected 2 times, back in 10.0s: 1 consecutive connect failures"
    )
    clock.now = first.down_until
    assert outliers.describe(first) == "not ejected (ejected 2 times recently)"
    assert outliers.is_ejected(first) is False


# ----------------------------------------------------------------------------- bad input


def test_unknown_failure_kind_is_rejected() -> None:
    outliers, (first, _), _clock = detector()
    with pytest.raises(ValueError, match="unknown failure kind '404'"):
        outliers.failure(first, "404")  # type: ignore[arg-type]


def test_an_endpoint_of_another_service_is_rejected() -> None:
    outliers, _endpoints, _clock = detector()
    stranger = Endpoint("10.9.9.9", 80, index=0)
    for call in (
        lambda: outliers.success(stranger),
        lambda: outliers.failure(stranger, "5xx"),
        lambda: outliers.describe(stranger),
    ):
        with pytest.raises(ValueError, match=r"10\.9\.9\.9:80 is not one of this detector's"):
            call()
    with pytest.raises(ValueError, match="not one of"):
        outliers.failure(Endpoint("10.9.9.9", 80, index=7), "5xx")


def test_endpoints_out_of_index_order_are_rejected() -> None:
    endpoints = make_endpoints(1, 1)
    with pytest.raises(ValueError, match="has index 1 but is at position 0"):
        OutlierDetector(OutlierDetectionConfig(), endpoints[::-1])


@pytest.mark.parametrize("slow_start", [-1.0, float("nan"), float("inf")])
def test_bad_slow_start_is_rejected(slow_start: float) -> None:
    with pytest.raises(ValueError, match="slow_start"):
        OutlierDetector(OutlierDetectionConfig(), make_endpoints(1), slow_start=slow_start)


def test_a_zero_failure_rate_window_is_rejected() -> None:
    # The config model refuses it already; the detector still guards against a constructed one.
    with pytest.raises(ValueError, match="longer than 0"):
        FailureRateConfig(window=0.0)
    window = FailureRateConfig.model_construct(threshold=0.5, minimum_requests=20, window=0.0)
    config = OutlierDetectionConfig(failure_rate=window)
    with pytest.raises(ValueError, match=r"failure_rate\.window must be greater than 0"):
        OutlierDetector(config, make_endpoints(1))


def test_no_endpoints() -> None:
    outliers = OutlierDetector(OutlierDetectionConfig(), [])
    outliers.refresh()
    assert outliers.ejected_count() == 0


def test_each_ejection_is_reported_once_even_after_the_count_decays() -> None:
    outliers, (first, second), clock = detector(consecutive_connect_failures=1)
    reported: list[Endpoint] = []
    outliers.on_eject = reported.append
    assert outliers.failure(first, "connect") is True
    assert not outliers.failure(first, "connect")  # already ejected: no second event
    clock.now += 5.0 + DECAY_INTERVAL  # back in service, and long enough to decay once
    outliers.refresh()
    assert first.ejections == 0
    assert outliers.failure(first, "connect") is True
    assert outliers.failure(second, "5xx") is False
    assert reported == [first, first]
