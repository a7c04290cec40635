"""Rates and quantiles from two ``/stats`` answers (``portway.admin.rates``), by hand-made answers.

The dashboard's JavaScript mirrors this module; ``tests/e2e/test_dashboard.py`` runs both on the
same answers and compares.
"""

from __future__ import annotations

from typing import Any

import pytest

from portway.admin.rates import live_numbers, quantile, row_rates

BOUNDS = [0.01, 0.1, 1.0]  # three finite buckets and +Inf


def answer(time: float, rows: dict[str, tuple[dict[str, int], list[int]]]) -> dict[str, Any]:
    def row(name: str, requests: dict[str, int], counts: list[int]) -> dict[str, Any]:
        return {"name": name, "requests": requests, "duration": {"counts": counts, "sum": 0.0}}

    built = [row(name, requests, counts) for name, (requests, counts) in rows.items()]
    return {"time": time, "buckets": BOUNDS, "routes": built, "services": built[:1]}


def test_quantile_interpolates_inside_the_bucket_like_histogram_quantile() -> None:
    # 10 requests: 4 under 10 ms, 4 in (10 ms, 100 ms], 2 in (100 ms, 1 s].
    counts = [4, 4, 2, 0]
    assert quantile(0.5, BOUNDS, counts) == pytest.approx(0.01 + 0.09 * (5 - 4) / 4)
    assert quantile(0.99, BOUNDS, counts) == pytest.approx(0.1 + 0.9 * (9.9 - 8) / 2)
    assert quantile(0.2, BOUNDS, counts) == pytest.approx(0.01 * 2 / 4)  # first bucket from 0
    assert quantile(0.5, BOUNDS, [0, 0, 0, 0]) is None
    assert quantile(0.99, BOUNDS, [0, 0, 0, 3]) == 1.0  # +Inf: the highest finite bound


def test_rates_are_increases_over_the_seconds_between_answers() -> None:
    first = answer(100.0, {"api": ({"2xx": 10, "5xx": 1}, [5, 5, 1, 0])})
    second = answer(102.0, {"api": ({"2xx": 30, "5xx": 5}, [15, 5, 10, 1])})
    live = live_numbers(first, second)
    assert live.seconds == 2.0
    api = live.routes[0]
    assert (api.name, api.requests, api.errors) == ("api", 35, 5)
    assert api.requests_per_second == (35 - 11) / 2
    assert api.errors_per_second == (5 - 1) / 2
    # The interval's histogram is [10, 0, 9, 1]: 20 requests.
    assert api.p50 == pytest.approx(0.01)
    assert api.p99 == pytest.approx(1.0)  # rank 19.8 lies in +Inf
    assert live.services[0].requests_per_second == api.requests_per_second


def test_the_first_answer_alone_gives_totals_but_no_rates() -> None:
    only = answer(100.0, {"api": ({"2xx": 7, "4xx": 2}, [9, 0, 0, 0])})
    api = live_numbers(None, only).routes[0]
    assert (api.requests, api.errors) == (9, 0)
    assert (api.requests_per_second, api.errors_per_second, api.p50, api.p99) == (None,) * 4


def test_a_counter_reset_counts_from_zero_and_a_quiet_interval_has_no_quantiles() -> None:
    before = {"name": "api", "requests": {"2xx": 50}, "duration": {"counts": [50, 0, 0, 0]}}
    after = {"name": "api", "requests": {"2xx": 4}, "duration": {"counts": [0, 4, 0, 0]}}
    reset = row_rates(before, after, 2.0, BOUNDS)
    assert reset.requests_per_second == 2.0
    assert reset.p50 == pytest.approx(0.01 + 0.09 * 2 / 4)
    quiet = row_rates(after, after, 1.0, BOUNDS)
    assert (quiet.requests_per_second, quiet.p50, quiet.p99) == (0.0, None, None)


def test_a_row_new_in_the_second_answer_counts_from_zero() -> None:
    first = answer(10.0, {"api": ({"2xx": 1}, [1, 0, 0, 0])})
    second = answer(11.0, {"api": ({"2xx": 1}, [1, 0, 0, 0]), "new": ({"5xx": 3}, [0, 3, 0, 0])})
    new = live_numbers(first, second).routes[1]
    assert (new.name, new.requests_per_second, new.errors_per_second) == ("new", 3.0, 3.0)


def test_answers_with_the_same_time_give_no_rates() -> None:
    same = answer(10.0, {"api": ({"2xx": 1}, [1, 0, 0, 0])})
    live = live_numbers(same, same)
    assert live.seconds is None and live.routes[0].requests_per_second is None
