"""Summing the workers' reports into one view: what ``/metrics`` and ``/services`` show.

Counters add up across workers. Histograms add up bucket by bucket (the reports carry per-bucket
counts, not cumulative ones; ``metrics`` makes them cumulative). Gauges combine by meaning: open
connections and requests in flight add up, an instance is ejected if any worker ejects it (each
worker has its own outlier detector) and unhealthy if any worker applies it as unhealthy.

A worker that is restarted starts counting from zero; the ``Aggregator`` keeps what the previous
process of that slot had counted (its last report) so the totals do not go backwards.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from portway.admin.rate_limits import merge as merge_rate_limits
from portway.observability.stats import DURATION_BUCKETS

COUNTERS = (
    "requests",
    "bytes_in",
    "bytes_out",
    "retries",
    "overflows",
    "ejections",
    "errors",
    "policy_rejections",
    "tls_handshakes",
    "certificate_reloads",
    "passthrough_connections",
    "passthrough_bytes",
    "tunnels",
    "telemetry_dropped",
)
# The telemetry a worker drops (rather than queue without bound) when its sink cannot keep up.
ACCESS_LOG, SPANS = "access_log", "spans"
HistogramData = tuple[list[int], float]  # per-bucket counts (the last is +Inf), sum of seconds


@dataclass
class InstanceTotals:
    healthy: bool = True  # no worker applies it as unhealthy
    ejected_by: int = 0  # workers whose outlier detector holds it ejected
    active: int = 0  # requests in flight, all workers


@dataclass
class Totals:
    buckets: tuple[float, ...] = DURATION_BUCKETS
    requests: dict[tuple[str, ...], int] = field(default_factory=dict)
    duration: dict[tuple[str, ...], HistogramData] = field(default_factory=dict)
    upstream_duration: dict[tuple[str, ...], HistogramData] = field(default_factory=dict)
    bytes_in: dict[tuple[str, ...], int] = field(default_factory=dict)
    bytes_out: dict[tuple[str, ...], int] = field(default_factory=dict)
    retries: dict[tuple[str, ...], int] = field(default_factory=dict)
    overflows: dict[tuple[str, ...], int] = field(default_factory=dict)
    ejections: dict[tuple[str, ...], int] = field(default_factory=dict)  # (service, instance)
    errors: dict[tuple[str, ...], int] = field(default_factory=dict)
    policy_rejections: dict[tuple[str, ...], int] = field(default_factory=dict)
    # Rate-limit policies' live state merged over the live workers (admin.rate_limits.merge).
    rate_limits: dict[str, dict[str, Any]] = field(default_factory=dict)
    tls_handshakes: dict[tuple[str, ...], int] = field(default_factory=dict)
    certificate_reloads: dict[tuple[str, ...], int] = field(default_factory=dict)
    passthrough_connections: dict[tuple[str, ...], int] = field(default_factory=dict)
    passthrough_bytes: dict[tuple[str, ...], int] = field(default_factory=dict)
    tunnels: dict[tuple[str, ...], int] = field(default_factory=dict)  # WebSocket, by outcome
    telemetry_dropped: dict[tuple[str, ...], int] = field(default_factory=dict)  # by signal
    # Every worker serves the same certificates: the first live report's list stands for all,
    # except that a reload error any worker reports is shown.
    certificates: list[dict[str, Any]] = field(default_factory=list)
    connections_total: int = 0
    connections_open: int = 0
    upstream_connections_open: dict[tuple[str, ...], int] = field(default_factory=dict)
    tunnels_open: int = 0
    reloads_ok: int = 0
    reloads_failed: int = 0
    last_reload_ok: float = 0.0
    reload_events: list[list[Any]] = field(default_factory=list)  # [time, ok, error], oldest first
    kubernetes: dict[str, Any] | None = None  # manifest/controller mode: the last build's report
    workers: int = 0  # reports summed (live workers; departed ones are not counted)
    instances: dict[tuple[str, str], InstanceTotals] = field(default_factory=dict)

    def add(self, report: dict[str, Any], *, gauges: bool = True) -> None:
        """Add one worker's report; ``gauges=False`` adds only its counters (a departed worker)."""
        for name in COUNTERS:
            _add_counters(getattr(self, name), report.get(name, ()))
        # Every process is forked from one supervisor, so the bounds agree; histograms with other
        # bounds could not be summed bucket by bucket and are left out rather than misread.
        if tuple(report.get("buckets", ())) == self.buckets:
            _add_histograms(self.duration, report.get("duration", ()), 2)
            _add_histograms(self.upstream_duration, report.get("upstream_duration", ()), 1)
        self.connections_total += int(report.get("connections_total", 0))
        self.reloads_ok += int(report.get("reloads_ok", 0))
        self.reloads_failed += int(report.get("reloads_failed", 0))
        self.last_reload_ok = max(self.last_reload_ok, float(report.get("last_reload_ok", 0.0)))
        if not gauges:
            return
        self.workers += 1
        self.connections_open += int(report.get("connections_open", 0))
        upstream = self.upstream_connections_open
        for service, count in report.get("upstream_connections", ()):
            upstream[(service,)] = upstream.get((service,), 0) + int(count)
        self.tunnels_open += int(report.get("tunnels_open", 0))
        if not self.reload_events:  # a gateway alone in its process: its own events
            self.reload_events = list(report.get("reload_events", ()))
        self._add_certificates(report.get("certificates", ()))
        merge_rate_limits(self.rate_limits, report.get("rate_limits", {}))
        for service, address, healthy, ejected, active in report.get("instances", ()):
            instance = self.instances.setdefault((service, address), InstanceTotals())
            instance.healthy = instance.healthy and bool(healthy)
            instance.ejected_by += 1 if ejected else 0
            instance.active += int(active)

    def _add_certificates(self, certificates: Sequence[dict[str, Any]]) -> None:
        if not self.certificates:
            self.certificates = [dict(c) for c in certificates]
            return
        errors = {(c["listener"], c["position"]): c.get("reload_error") for c in certificates}
        for certificate in self.certificates:
            error = errors.get((certificate["listener"], certificate["position"]))
            if error and not certificate.get("reload_error"):
                certificate["reload_error"] = error

    def set_reloads(self, control: dict[str, Any]) -> None:
        """Take the reload counters from the supervisor's record: it alone decides whether a
        reload is accepted, and summing the workers would count each reload once per worker."""
        self.reloads_ok = int(control.get("reloads_ok", 0))
        self.reloads_failed = int(control.get("reloads_failed", 0))
        self.last_reload_ok = float(control.get("last_reload_ok", 0.0))
        self.reload_events = list(control.get("reload_events", ()))
        kubernetes = control.get("kubernetes")
        self.kubernetes = kubernetes if isinstance(kubernetes, dict) else None


def _add_counters(into: dict[tuple[str, ...], int], rows: Sequence[Sequence[Any]]) -> None:
    for *labels, value in rows:
        key = tuple(str(label) for label in labels)
        into[key] = into.get(key, 0) + int(value)


def _add_histograms(
    into: dict[tuple[str, ...], HistogramData], rows: Sequence[Sequence[Any]], labels: int
) -> None:
    for row in rows:
        key = tuple(str(label) for label in row[:labels])
        counts, total = row[labels], float(row[labels + 1])
        have = into.get(key)
        if have is None:
            into[key] = ([int(c) for c in counts], total)
        else:
            into[key] = (
                [a + int(b) for a, b in zip(have[0], counts, strict=True)],
                have[1] + total,
            )


def aggregate(
    reports: Sequence[dict[str, Any] | None], control: dict[str, Any] | None = None
) -> Totals:
    """The totals of ``reports`` (None: a worker that has not published yet)."""
    totals = Totals()
    for report in reports:
        if report is not None:
            totals.add(report)
    if control is not None:
        totals.set_reloads(control)
    return totals


class Aggregator:
    """Totals over time: keeps the counts of worker processes that were replaced.

    ``observe`` takes the reports of every slot (None where a slot has none, or a read failed:
    the slot's last good report stands in). Thread-safe: the admin server's threads share one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[int, dict[str, Any]] = {}
        self._departed = Totals()  # counters of processes no longer in their slot

    def observe(
        self, reports: Sequence[dict[str, Any] | None], control: dict[str, Any] | None = None
    ) -> tuple[Totals, list[dict[str, Any] | None]]:
        """The totals now, and the report used for each slot."""
        with self._lock:
            current: list[dict[str, Any] | None] = []
            for slot, report in enumerate(reports):
                last = self._last.get(slot)
                if report is None:
                    report = last
                elif last is not None and _process(last) != _process(report):
                    self._departed.add(last, gauges=False)
                if report is not None:
                    self._last[slot] = report
                current.append(report)
            totals = Totals()
            totals.add(_as_report(self._departed), gauges=False)
            for report in current:
                if report is not None:
                    totals.add(report)
            if control is not None:
                totals.set_reloads(control)
            return totals, current


def _process(report: dict[str, Any]) -> tuple[Any, Any]:
    return report.get("pid"), report.get("started")


def _as_report(totals: Totals) -> dict[str, Any]:
    """``totals``' counters in the report format, so departed counts add like a worker's."""
    return {
        "buckets": list(totals.buckets),
        **{name: [[*k, v] for k, v in getattr(totals, name).items()] for name in COUNTERS},
        "duration": [[*k, c, s] for k, (c, s) in totals.duration.items()],
        "upstream_duration": [[*k, c, s] for k, (c, s) in totals.upstream_duration.items()],
        "connections_total": totals.connections_total,
        "reloads_ok": totals.reloads_ok,
        "reloads_failed": totals.reloads_failed,
        "last_reload_ok": totals.last_reload_ok,
    }
