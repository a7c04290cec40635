"""Live numbers from two successive ``/stats`` answers: requests/s, errors/s, p50 and p99.

The one Python implementation (``portway top`` uses it); ``admin/dashboard/dashboard.js`` mirrors
it function for function (``quantile``, ``rowRates``, ``liveNumbers``), so the page and the
terminal show the same numbers for the same two answers.

* Rates are the increase of a cumulative count divided by the seconds between the two answers'
  ``time``. A count that went down (the admin process restarted) counts from zero, as Prometheus
  reads a counter reset.
* An error is a 5xx answer, whether an upstream or the gateway wrote it.
* p50 and p99 come from the increase of the duration histogram over the interval, interpolated
  linearly inside the bucket the rank falls in (as PromQL's ``histogram_quantile``); a rank in the
  +Inf bucket answers the highest finite bound. No request in the interval: no quantile (None).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ERROR_CLASSES = ("5xx",)


@dataclass(frozen=True, slots=True)
class RowRates:
    """One route's or service's numbers; rates and quantiles are None without a previous answer."""

    name: str
    requests: int  # cumulative, every status class
    errors: int  # cumulative 5xx
    requests_per_second: float | None
    errors_per_second: float | None
    p50: float | None  # seconds
    p99: float | None


@dataclass(frozen=True, slots=True)
class LiveNumbers:
    seconds: float | None  # between the two answers
    routes: list[RowRates]
    services: list[RowRates]


def quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The ``q`` quantile of per-bucket ``counts`` (``len(bounds) + 1`` of them, the last +Inf)."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    running = 0
    for index, count in enumerate(counts):
        if count > 0 and running + count >= rank:
            if index >= len(bounds):  # the +Inf bucket
                return float(bounds[-1]) if bounds else None
            lower = float(bounds[index - 1]) if index > 0 else 0.0
            upper = float(bounds[index])
            return lower + (upper - lower) * (rank - running) / count
        running += count
    return float(bounds[-1]) if bounds else None


def _requests(row: Mapping[str, Any]) -> tuple[int, int]:
    by_class: Mapping[str, int] = row.get("requests", {})
    total = sum(int(v) for v in by_class.values())
    errors = sum(int(by_class.get(c, 0)) for c in ERROR_CLASSES)
    return total, errors


def _counts(row: Mapping[str, Any]) -> list[int]:
    return [int(c) for c in row.get("duration", {}).get("counts", [])]


def _increase(now: int, before: int) -> int:
    return now - before if now >= before else now  # a counter reset counts from zero


def row_rates(
    previous: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    seconds: float | None,
    bounds: Sequence[float],
) -> RowRates:
    """The numbers of one row (``current``) given the same row in the previous answer."""
    requests, errors = _requests(current)
    name = str(current.get("name", ""))
    if seconds is None or seconds <= 0:
        return RowRates(name, requests, errors, None, None, None, None)
    before_requests, before_errors = _requests(previous) if previous is not None else (0, 0)
    counts = _counts(current)
    before = _counts(previous) if previous is not None else []
    if len(before) != len(counts) or any(b > c for b, c in zip(before, counts, strict=True)):
        before = [0] * len(counts)  # a reset (or other buckets): the whole current histogram
    delta = [c - b for c, b in zip(counts, before, strict=True)]
    return RowRates(
        name,
        requests,
        errors,
        _increase(requests, before_requests) / seconds,
        _increase(errors, before_errors) / seconds,
        quantile(0.5, bounds, delta),
        quantile(0.99, bounds, delta),
    )


def _rows(
    previous: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    key: str,
    seconds: float | None,
) -> list[RowRates]:
    bounds = [float(b) for b in current.get("buckets", [])]
    before = {r["name"]: r for r in previous.get(key, [])} if previous is not None else {}
    return [row_rates(before.get(r["name"]), r, seconds, bounds) for r in current.get(key, [])]


def live_numbers(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> LiveNumbers:
    """Every route's and service's numbers between two ``/stats`` answers (the first may be None:
    only the cumulative counts are known then)."""
    seconds: float | None = None
    if previous is not None:
        seconds = float(current["time"]) - float(previous["time"])
        if seconds <= 0:
            seconds = None
    return LiveNumbers(
        seconds,
        _rows(previous, current, "routes", seconds),
        _rows(previous, current, "services", seconds),
    )
