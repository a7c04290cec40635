"""How the aggregated totals become Prometheus samples (the metrics are defined in
``metric_specs``).

``prometheus_client`` renders the exposition formats (the text format, or OpenMetrics when a
scraper asks for it) from a custom collector over the totals the admin API aggregated from the
workers; the workers themselves never touch it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from portway.acme.status import CertificateStatus
from portway.admin import metric_specs as specs
from portway.admin.aggregate import ACCESS_LOG, SPANS, HistogramData, Totals
from portway.admin.metric_specs import MetricSpec
from portway.health.state import HealthState

InstanceHealth = Mapping[tuple[str, str], HealthState]  # (service, address) -> state


@dataclass(frozen=True, slots=True)
class MetricsView:
    """What one scrape renders: the totals, the health board's states, the instances configured."""

    totals: Totals
    health: InstanceHealth  # instances of services with a health check, from the board
    instances: tuple[tuple[str, str], ...]  # (service, address) of the current config
    acme: tuple[CertificateStatus, ...] = ()  # the ACME process's records (status.json)


def _counter(spec: MetricSpec, rows: Mapping[tuple[str, ...], int]) -> Metric:
    family = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
    for labels, value in sorted(rows.items()):
        family.add_metric(labels, value)
    return family


def _gauge(spec: MetricSpec, rows: Mapping[tuple[str, ...], float]) -> Metric:
    family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
    for labels, value in sorted(rows.items()):
        family.add_metric(labels, value)
    return family


def _le(bound: float) -> str:
    """A bucket bound as Prometheus clients write ``le``: ``0.005``, ``1.0``, ``10.0``."""
    return repr(float(bound))


def _histogram(
    spec: MetricSpec,
    buckets: tuple[float, ...],
    rows: Mapping[tuple[str, ...], HistogramData],
) -> Metric:
    family = HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
    bounds = [_le(b) for b in buckets] + ["+Inf"]
    for labels, (counts, total) in sorted(rows.items()):
        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(bounds, counts, strict=True):
            running += count
            cumulative.append((bound, running))
        family.add_metric(labels, cumulative, total)
    return family


def families(view: MetricsView) -> Iterator[Metric]:
    totals = view.totals
    yield _counter(specs.REQUESTS, totals.requests)
    yield _histogram(specs.REQUEST_DURATION, totals.buckets, totals.duration)
    yield _histogram(specs.UPSTREAM_DURATION, totals.buckets, totals.upstream_duration)
    yield _counter(specs.RECEIVED_BYTES, totals.bytes_in)
    yield _counter(specs.SENT_BYTES, totals.bytes_out)
    yield _gauge(specs.CONNECTIONS_OPEN, {(): totals.connections_open})
    yield _counter(specs.CONNECTIONS, {(): totals.connections_total})
    yield _gauge(specs.UPSTREAM_CONNECTIONS_OPEN, totals.upstream_connections_open)
    yield _counter(specs.RETRIES, totals.retries)
    yield _counter(specs.OVERFLOWS, totals.overflows)
    yield _counter(specs.LOCAL_ERRORS, totals.errors)
    yield _counter(specs.POLICY_REJECTIONS, totals.policy_rejections)
    limits = totals.rate_limits
    yield _gauge(specs.RATE_LIMIT_KEYS, {(name,): float(s["keys"]) for name, s in limits.items()})
    shared = {name: s["redis"] for name, s in limits.items() if "redis" in s}
    yield _gauge(
        specs.RATE_LIMIT_STORE_UP, {(n,): 1.0 if r["up"] else 0.0 for n, r in shared.items()}
    )
    yield _counter(
        specs.RATE_LIMIT_STORE_ERRORS, {(n,): r["sync_errors"] for n, r in shared.items()}
    )
    healthy: dict[tuple[str, ...], float] = {}
    ejected: dict[tuple[str, ...], float] = {}
    active: dict[tuple[str, ...], float] = {}
    for key in view.instances:
        reported = totals.instances.get(key)
        state = view.health.get(key)
        # Without a state on the board (no health check, or the board follows another config for
        # a moment) the workers' own view decides.
        up = (
            state != HealthState.UNHEALTHY
            if state is not None
            else reported is None or reported.healthy
        )
        healthy[key] = 1.0 if up else 0.0
        ejected[key] = 1.0 if reported is not None and reported.ejected_by else 0.0
        active[key] = float(reported.active) if reported is not None else 0.0
    yield _gauge(specs.INSTANCE_HEALTHY, healthy)
    yield _gauge(specs.INSTANCE_EJECTED, ejected)
    # Every configured instance has a sample from the start (0), so `increase()` sees the first
    # ejection; instances a reload removed keep theirs.
    yield _counter(specs.INSTANCE_EJECTIONS, dict.fromkeys(view.instances, 0) | totals.ejections)
    yield _gauge(specs.INSTANCE_ACTIVE, active)
    reloads: dict[tuple[str, ...], int] = {
        ("success",): totals.reloads_ok,
        ("failure",): totals.reloads_failed,
    }
    yield _counter(specs.RELOADS, reloads)
    yield _gauge(specs.LAST_RELOAD, {(): totals.last_reload_ok})
    yield _counter(specs.TLS_HANDSHAKES, totals.tls_handshakes)
    yield _counter(specs.CERTIFICATE_RELOADS, totals.certificate_reloads)
    expiry: dict[tuple[str, ...], float] = {}
    refused: dict[tuple[str, ...], float] = {}
    for certificate in totals.certificates:
        key = (str(certificate["listener"]), str((certificate["hosts"] or ["-"])[0]))
        expiry[key] = datetime.fromisoformat(str(certificate["not_after"])).timestamp()
        refused[key] = 1.0 if certificate.get("reload_error") else 0.0
    yield _gauge(specs.CERTIFICATE_EXPIRY, expiry)
    yield _gauge(specs.CERTIFICATE_RELOAD_ERROR, refused)
    yield _counter(specs.PASSTHROUGH_CONNECTIONS, totals.passthrough_connections)
    yield _counter(specs.PASSTHROUGH_BYTES, totals.passthrough_bytes)
    yield _counter(specs.TUNNELS, totals.tunnels)
    yield _gauge(specs.TUNNELS_OPEN, {(): totals.tunnels_open})
    yield _gauge(specs.ACME_FAILURES, {(r.hosts[0],): float(r.failures) for r in view.acme})
    yield _gauge(specs.ACME_LAST_SUCCESS, {(r.hosts[0],): r.last_success or 0.0 for r in view.acme})
    # Manifest and controller mode only: elsewhere the families are declared without samples.
    kubernetes = totals.kubernetes or {}
    issues: dict[tuple[str, ...], float] = {
        (str(k), str(s)): float(n) for k, s, n in kubernetes.get("issues", ())
    }
    yield _gauge(specs.KUBERNETES_ISSUES, issues)
    present = totals.kubernetes is not None
    yield _gauge(specs.KUBERNETES_KEPT, {(): float(kubernetes.get("kept", 0))} if present else {})
    yield _gauge(
        specs.KUBERNETES_OBJECTS, {(): float(kubernetes.get("objects", 0))} if present else {}
    )
    yield _gauge(specs.ACME_RENEW_AT, {(r.hosts[0],): r.renew_at or 0.0 for r in view.acme})
    signals = dict.fromkeys([(ACCESS_LOG,), (SPANS,)], 0)  # both from the start: increase() works
    yield _counter(specs.TELEMETRY_DROPPED, signals | totals.telemetry_dropped)
    yield _gauge(specs.WORKERS, {(): totals.workers})


class _ViewCollector(Collector):
    def __init__(self, view: Callable[[], MetricsView]) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        return families(self._view())


def registry_for(view: Callable[[], MetricsView]) -> CollectorRegistry:
    """A registry whose only collector renders ``view()`` at each scrape (no process metrics:
    the admin process's own CPU and memory would be mistaken for the gateway's)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ViewCollector(view))
    return registry


def render(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The exposition for an ``Accept`` header: (body, content type)."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
