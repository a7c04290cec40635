"""The JSON body of ``/stats``: cumulative counts the dashboard and ``portway top`` poll.

Only counters, never rates: per route and per service the requests answered by status class and
the request-duration histogram (per-bucket counts, the last one +Inf, and the sum of seconds), plus
the server's clock. A client takes two successive answers and derives requests/s, errors/s and
p50/p99 over the interval between them (``portway.admin.rates``, mirrored by the dashboard's
JavaScript), so any number of clients can poll at any pace and none disturbs another.

Recent reloads and errors are what the aggregate knows: reload counts by result and the time of
the last successful one, and the gateway's own error answers counted by ``portway-error`` cause.
"""

from __future__ import annotations

import time
from typing import Any

from portway.admin.aggregate import ACCESS_LOG, SPANS, HistogramData, Totals
from portway.admin.metrics import InstanceHealth
from portway.admin.views import services_json
from portway.config.model import Config
from portway.observability.stats import NO_ROUTE

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
UNROUTED = "(no route)"  # the row of requests that matched no route (404 no_route)


class _Row:
    """Counts summed over the totals' label keys that belong to one route or one service."""

    def __init__(self, buckets: int) -> None:
        self.requests = dict.fromkeys(STATUS_CLASSES, 0)
        self.counts = [0] * buckets
        self.seconds = 0.0

    def add_requests(self, status_class: str, value: int) -> None:
        if status_class in self.requests:
            self.requests[status_class] += value

    def add_histogram(self, histogram: HistogramData) -> None:
        counts, total = histogram
        self.counts = [a + b for a, b in zip(self.counts, counts, strict=True)]
        self.seconds += total

    def json(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "duration": {"counts": list(self.counts), "sum": round(self.seconds, 6)},
        }


def _rows(totals: Totals, label: int) -> dict[str, _Row]:
    """Rows keyed by label ``label`` of the (route, service) keys: 0 for routes, 1 for services."""
    rows: dict[str, _Row] = {}
    size = len(totals.buckets) + 1

    def row(key: str) -> _Row:
        found = rows.get(key)
        if found is None:
            found = rows[key] = _Row(size)
        return found

    for (route, service, _method, status_class), value in _request_keys(totals):
        row((route, service)[label]).add_requests(status_class, value)
    for (route, service), histogram in _duration_keys(totals):
        row((route, service)[label]).add_histogram(histogram)
    return rows


def _request_keys(totals: Totals) -> list[tuple[tuple[str, str, str, str], int]]:
    return [((k[0], k[1], k[2], k[3]), v) for k, v in totals.requests.items() if len(k) == 4]


def _duration_keys(totals: Totals) -> list[tuple[tuple[str, str], HistogramData]]:
    return [((k[0], k[1]), v) for k, v in totals.duration.items() if len(k) == 2]


def stats_json(
    config: Config, totals: Totals, health: InstanceHealth, now: float | None = None
) -> dict[str, Any]:
    """Routes in config order (then any that a reload removed, then unrouted requests), services
    by name with their instances as ``/services`` shows them."""
    size = len(totals.buckets) + 1
    by_route = _rows(totals, 0)
    by_service = _rows(totals, 1)
    routes: list[dict[str, Any]] = []
    for index, route in enumerate(config.routes):
        name = route.name or f"route-{index}"
        counts = by_route.pop(name) if name in by_route else _Row(size)
        routes.append(
            {
                "name": name,
                "service": route.service,
                "hosts": list(route.hosts),
                "path": route.path,
                "configured": True,
                **counts.json(),
            }
        )
    unrouted = by_route.pop(NO_ROUTE) if NO_ROUTE in by_route else None
    for name, counts in sorted(by_route.items()):  # routes a reload removed: their counts stay
        routes.append(
            {"name": name, "service": "", "hosts": [], "path": "", "configured": False}
            | counts.json()
        )
    if unrouted is not None:
        routes.append(
            {"name": UNROUTED, "service": "", "hosts": [], "path": "", "configured": False}
            | unrouted.json()
        )
    by_service.pop(NO_ROUTE, _Row(size))
    services: list[dict[str, Any]] = []
    for service in services_json(config, totals, health)["services"]:
        counts = by_service.pop(service["name"]) if service["name"] in by_service else _Row(size)
        services.append({**service, "configured": True, **counts.json()})
    for name, counts in sorted(by_service.items()):
        services.append(
            {
                "name": name,
                "algorithm": "",
                "health_check": False,
                "retries": 0,
                "instances": [],
                "configured": False,
            }
            | counts.json()
        )
    return {
        "time": time.time() if now is None else now,
        "buckets": list(totals.buckets),
        "status_classes": list(STATUS_CLASSES),
        "routes": routes,
        "services": services,
        "errors": dict(sorted(((k[0], v) for k, v in totals.errors.items() if k), key=_first)),
        "policy_rejections": [
            {"route": route, "policy": policy, "kind": kind, "reason": reason, "count": count}
            for (route, policy, kind, reason), count in sorted(totals.policy_rejections.items())
        ],
        "reloads": {
            "success": totals.reloads_ok,
            "failure": totals.reloads_failed,
            "last_success": totals.last_reload_ok or None,
            "recent": [
                {"time": when, "ok": bool(ok), "error": error}
                for when, ok, error in reversed(totals.reload_events)
            ],
        },
        "connections": {"open": totals.connections_open, "total": totals.connections_total},
        "telemetry_dropped": {
            signal: totals.telemetry_dropped.get((signal,), 0) for signal in (ACCESS_LOG, SPANS)
        },
        "workers": totals.workers,
    }


def _first(item: tuple[str, int]) -> str:
    return item[0]
