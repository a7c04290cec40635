"""The worker's duration histograms: which bucket a duration is counted in."""

from __future__ import annotations

from bisect import bisect_left

from portway.observability.stats import DURATION_BUCKETS, Histogram, WorkerStats, bucket


def test_a_duration_goes_to_the_first_bucket_whose_bound_is_at_or_above_it() -> None:
    """Prometheus buckets are upper-inclusive (``le``): a duration equal to a bound counts in that
    bucket; above the last bound it goes to +Inf."""
    assert bucket(0.0) == 0
    assert bucket(0.001) == 0
    assert bucket(0.0010001) == 1
    assert bucket(10.0) == len(DURATION_BUCKETS) - 1
    assert bucket(10.5) == len(DURATION_BUCKETS)  # +Inf
    for bound in DURATION_BUCKETS:
        for seconds in (bound * 0.999, bound, bound * 1.001):
            assert bucket(seconds) == bisect_left(DURATION_BUCKETS, seconds), seconds


def test_recorded_durations_land_in_their_buckets() -> None:
    stats = WorkerStats()
    stats.record("r", "s", "GET", 200, 0.0004, 0.0003, 0, 10, None)
    stats.record("r", "s", "GET", 200, 0.02, 0.019, 0, 10, None)
    stats.record("r", "s", "GET", 503, 30.0, -1.0, 0, 10, b"upstream_timeout")
    counters = stats.counters("r", "s")
    expected = [0] * (len(DURATION_BUCKETS) + 1)
    expected[0] = expected[DURATION_BUCKETS.index(0.025)] = expected[-1] = 1
    assert counters.duration.counts == expected
    upstream = counters.upstream
    assert isinstance(upstream, Histogram)
    assert sum(upstream.counts) == 2  # the 503 never reached an upstream
    assert counters.requests == {"GET": {200: 2, 503: 1}}
    assert stats.errors == {"upstream_timeout": 1}
