"""Every Prometheus metric Portway exposes: names, help, labels, and how totals become samples.

The one place metric names are defined. ``prometheus_client`` renders the exposition formats (the
text format, or OpenMetrics when a scraper asks for it) from a custom collector over the totals
the admin API aggregated from the workers; the workers themselves never touch it.

Label values are bounded: route, service and instance names come from the config, methods from a
fixed set (anything else is ``OTHER``), status classes and error causes are fixed sets.
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
from portway.admin.aggregate import HistogramData, Totals
from portway.health.state import HealthState

ROUTE_LABELS = ("route", "service")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: str  # "counter", "gauge" or "histogram"
    help: str
    labels: tuple[str, ...] = ()


REQUESTS = MetricSpec(
    "portway_requests_total",
    "counter",
    "Requests answered, by route, service, method and status class (route and service are empty "
    "when no route matched).",
    ("route", "service", "method", "status_class"),
)
REQUEST_DURATION = MetricSpec(
    "portway_request_duration_seconds",
    "histogram",
    "Time from the request head to the last response byte, by route and service.",
    ROUTE_LABELS,
)
UPSTREAM_DURATION = MetricSpec(
    "portway_upstream_duration_seconds",
    "histogram",
    "Time from sending a request upstream to the first response byte, by service.",
    ("service",),
)
RECEIVED_BYTES = MetricSpec(
    "portway_request_body_bytes_total",
    "counter",
    "Request body bytes received from clients, by route and service.",
    ROUTE_LABELS,
)
SENT_BYTES = MetricSpec(
    "portway_response_bytes_total",
    "counter",
    "Response bytes (head and body) sent to clients, by route and service.",
    ROUTE_LABELS,
)
CONNECTIONS_OPEN = MetricSpec(
    "portway_client_connections_open", "gauge", "Client connections open, all workers."
)
CONNECTIONS = MetricSpec(
    "portway_client_connections_total", "counter", "Client connections accepted, all workers."
)
RETRIES = MetricSpec(
    "portway_retries_total", "counter", "Requests retried on another try, by service.", ("service",)
)
OVERFLOWS = MetricSpec(
    "portway_circuit_breaker_overflows_total",
    "counter",
    "Requests refused with 503 because a circuit-breaker limit was reached, by service and limit.",
    ("service", "limit"),
)
LOCAL_ERRORS = MetricSpec(
    "portway_local_errors_total",
    "counter",
    "Error responses the gateway wrote itself, by cause (the portway-error header).",
    ("cause",),
)
POLICY_REJECTIONS = MetricSpec(
    "portway_policy_rejections_total",
    "counter",
    "Requests a policy refused (401 authentication, 403 address or CORS, 429 rate limit, 503 "
    "policy unavailable), by route, policy, kind and reason: missing_credentials, "
    "invalid_credentials, expired_credentials, rate_limited, address_refused, cors_refused or "
    "policy_unavailable.",
    ("route", "policy", "kind", "reason"),
)
RATE_LIMIT_KEYS = MetricSpec(
    "portway_rate_limit_keys",
    "gauge",
    "Keys (clients, consumers, header values) a rate-limit policy tracks, summed over workers.",
    ("policy",),
)
RATE_LIMIT_STORE_UP = MetricSpec(
    "portway_rate_limit_store_up",
    "gauge",
    "1 if every worker's last sync of a `store: redis` rate limit with Redis succeeded, else 0 "
    "(the limit then counts locally).",
    ("policy",),
)
RATE_LIMIT_STORE_ERRORS = MetricSpec(
    "portway_rate_limit_store_errors_total",
    "counter",
    "Failed syncs of a `store: redis` rate limit with Redis, summed over live workers.",
    ("policy",),
)
INSTANCE_HEALTHY = MetricSpec(
    "portway_instance_healthy",
    "gauge",
    "1 if the instance is healthy (or its service has no health check), 0 if not.",
    ("service", "instance"),
)
INSTANCE_EJECTED = MetricSpec(
    "portway_instance_ejected",
    "gauge",
    "1 if the outlier detection of any worker holds the instance ejected, else 0.",
    ("service", "instance"),
)
INSTANCE_EJECTIONS = MetricSpec(
    "portway_instance_ejections_total",
    "counter",
    "Outlier ejections of the instance started, summed over workers (each ejects on its own).",
    ("service", "instance"),
)
INSTANCE_ACTIVE = MetricSpec(
    "portway_instance_active_requests",
    "gauge",
    "Requests in flight to the instance, all workers.",
    ("service", "instance"),
)
RELOADS = MetricSpec(
    "portway_config_reloads_total",
    "counter",
    "Config reloads (SIGHUP), by result: success or failure.",
    ("result",),
)
LAST_RELOAD = MetricSpec(
    "portway_config_last_reload_success_timestamp_seconds",
    "gauge",
    "Unix time of the last successful config reload; 0 if none since start.",
)
TLS_HANDSHAKES = MetricSpec(
    "portway_tls_handshakes_total",
    "counter",
    "TLS handshakes on HTTPS listeners, by listener and result: ok, or why it failed (timeout, "
    "not_tls, protocol_version, no_shared_cipher, client_certificate_invalid, ...).",
    ("listener", "result"),
)
CERTIFICATE_RELOADS = MetricSpec(
    "portway_tls_certificate_reloads_total",
    "counter",
    "Changed certificate files read, by listener and result: ok (now served) or failed (the "
    "previous certificate keeps serving). Counted once per worker.",
    ("listener", "result"),
)
CERTIFICATE_EXPIRY = MetricSpec(
    "portway_tls_certificate_expiry_timestamp_seconds",
    "gauge",
    "Unix time when the served certificate expires, by listener and certificate (its first host).",
    ("listener", "certificate"),
)
CERTIFICATE_RELOAD_ERROR = MetricSpec(
    "portway_tls_certificate_reload_error",
    "gauge",
    "1 while a certificate's changed files are refused (the previous one serves), else 0.",
    ("listener", "certificate"),
)
PASSTHROUGH_CONNECTIONS = MetricSpec(
    "portway_passthrough_connections_total",
    "counter",
    "TLS passthrough connections ended, by listener, service (empty when none was chosen) and "
    "outcome (relayed, idle_timeout, hello_timeout, not_tls, malformed, too_large, no_route, "
    "no_healthy_instance, overflow_max_connections, connect_failed, connect_timeout, "
    "client_closed).",
    ("listener", "service", "outcome"),
)
PASSTHROUGH_BYTES = MetricSpec(
    "portway_passthrough_bytes_total",
    "counter",
    "Bytes relayed by TLS passthrough, by service and direction (in: from clients, out: to them).",
    ("service", "direction"),
)
TUNNELS = MetricSpec(
    "portway_tunnels_total",
    "counter",
    "WebSocket handshakes the upstream answered, by route, service and outcome: how an opened "
    "tunnel ended (closed, idle_timeout, error, draining), or refused (another status than 101).",
    ("route", "service", "outcome"),
)
TUNNELS_OPEN = MetricSpec(
    "portway_tunnels_open",
    "gauge",
    "WebSocket tunnels open now, all workers.",
)
ACME_FAILURES = MetricSpec(
    "portway_acme_consecutive_failures",
    "gauge",
    "Failed ACME orders or renewals in a row for a certificate (by its first host); 0 after a "
    "success. The previous certificate keeps serving meanwhile.",
    ("certificate",),
)
ACME_LAST_SUCCESS = MetricSpec(
    "portway_acme_last_success_timestamp_seconds",
    "gauge",
    "Unix time the certificate was last obtained or renewed; 0 if never.",
    ("certificate",),
)
ACME_RENEW_AT = MetricSpec(
    "portway_acme_renew_at_timestamp_seconds",
    "gauge",
    "Unix time from which the certificate is due for renewal (renew_after of its lifetime).",
    ("certificate",),
)
KUBERNETES_ISSUES = MetricSpec(
    "portway_kubernetes_issues",
    "gauge",
    "Problems found in the Kubernetes objects by the last build (manifest or controller mode), "
    "by kind and severity (error: the object is not served, or serves its last valid version).",
    ("kind", "severity"),
)
KUBERNETES_KEPT = MetricSpec(
    "portway_kubernetes_objects_kept",
    "gauge",
    "Kubernetes objects serving their last valid version because the current one is invalid.",
)
KUBERNETES_OBJECTS = MetricSpec(
    "portway_kubernetes_objects", "gauge", "Kubernetes objects read by the last build."
)
WORKERS = MetricSpec(
    "portway_workers_reporting", "gauge", "Worker processes whose statistics are included."
)

ALL = (
    REQUESTS,
    REQUEST_DURATION,
    UPSTREAM_DURATION,
    RECEIVED_BYTES,
    SENT_BYTES,
    CONNECTIONS_OPEN,
    CONNECTIONS,
    RETRIES,
    OVERFLOWS,
    LOCAL_ERRORS,
    POLICY_REJECTIONS,
    RATE_LIMIT_KEYS,
    RATE_LIMIT_STORE_UP,
    RATE_LIMIT_STORE_ERRORS,
    INSTANCE_HEALTHY,
    INSTANCE_EJECTED,
    INSTANCE_EJECTIONS,
    INSTANCE_ACTIVE,
    RELOADS,
    LAST_RELOAD,
    TLS_HANDSHAKES,
    CERTIFICATE_RELOADS,
    CERTIFICATE_EXPIRY,
    CERTIFICATE_RELOAD_ERROR,
    PASSTHROUGH_CONNECTIONS,
    PASSTHROUGH_BYTES,
    TUNNELS,
    TUNNELS_OPEN,
    ACME_FAILURES,
    ACME_LAST_SUCCESS,
    ACME_RENEW_AT,
    KUBERNETES_ISSUES,
    KUBERNETES_KEPT,
    KUBERNETES_OBJECTS,
    WORKERS,
)

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
    spec: MetricSpec, buckets: tuple[float, ...], rows: Mapping[tuple[str, ...], HistogramData]
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
    yield _counter(REQUESTS, totals.requests)
    yield _histogram(REQUEST_DURATION, totals.buckets, totals.duration)
    yield _histogram(UPSTREAM_DURATION, totals.buckets, totals.upstream_duration)
    yield _counter(RECEIVED_BYTES, totals.bytes_in)
    yield _counter(SENT_BYTES, totals.bytes_out)
    yield _gauge(CONNECTIONS_OPEN, {(): totals.connections_open})
    yield _counter(CONNECTIONS, {(): totals.connections_total})
    yield _counter(RETRIES, totals.retries)
    yield _counter(OVERFLOWS, totals.overflows)
    yield _counter(LOCAL_ERRORS, totals.errors)
    yield _counter(POLICY_REJECTIONS, totals.policy_rejections)
    limits = totals.rate_limits
    yield _gauge(RATE_LIMIT_KEYS, {(name,): float(s["keys"]) for name, s in limits.items()})
    shared = {name: s["redis"] for name, s in limits.items() if "redis" in s}
    yield _gauge(RATE_LIMIT_STORE_UP, {(n,): 1.0 if r["up"] else 0.0 for n, r in shared.items()})
    yield _counter(RATE_LIMIT_STORE_ERRORS, {(n,): r["sync_errors"] for n, r in shared.items()})
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
    yield _gauge(INSTANCE_HEALTHY, healthy)
    yield _gauge(INSTANCE_EJECTED, ejected)
    # Every configured instance has a sample from the start (0), so `increase()` sees the first
    # ejection; instances a reload removed keep theirs.
    yield _counter(INSTANCE_EJECTIONS, dict.fromkeys(view.instances, 0) | totals.ejections)
    yield _gauge(INSTANCE_ACTIVE, active)
    reloads: dict[tuple[str, ...], int] = {
        ("success",): totals.reloads_ok,
        ("failure",): totals.reloads_failed,
    }
    yield _counter(RELOADS, reloads)
    yield _gauge(LAST_RELOAD, {(): totals.last_reload_ok})
    yield _counter(TLS_HANDSHAKES, totals.tls_handshakes)
    yield _counter(CERTIFICATE_RELOADS, totals.certificate_reloads)
    expiry: dict[tuple[str, ...], float] = {}
    refused: dict[tuple[str, ...], float] = {}
    for certificate in totals.certificates:
        key = (str(certificate["listener"]), str((certificate["hosts"] or ["-"])[0]))
        expiry[key] = datetime.fromisoformat(str(certificate["not_after"])).timestamp()
        refused[key] = 1.0 if certificate.get("reload_error") else 0.0
    yield _gauge(CERTIFICATE_EXPIRY, expiry)
    yield _gauge(CERTIFICATE_RELOAD_ERROR, refused)
    yield _counter(PASSTHROUGH_CONNECTIONS, totals.passthrough_connections)
    yield _counter(PASSTHROUGH_BYTES, totals.passthrough_bytes)
    yield _counter(TUNNELS, totals.tunnels)
    yield _gauge(TUNNELS_OPEN, {(): totals.tunnels_open})
    yield _gauge(ACME_FAILURES, {(r.hosts[0],): float(r.failures) for r in view.acme})
    yield _gauge(ACME_LAST_SUCCESS, {(r.hosts[0],): r.last_success or 0.0 for r in view.acme})
    # Manifest and controller mode only: elsewhere the families are declared without samples.
    kubernetes = totals.kubernetes or {}
    issues: dict[tuple[str, ...], float] = {
        (str(k), str(s)): float(n) for k, s, n in kubernetes.get("issues", ())
    }
    yield _gauge(KUBERNETES_ISSUES, issues)
    present = totals.kubernetes is not None
    yield _gauge(KUBERNETES_KEPT, {(): float(kubernetes.get("kept", 0))} if present else {})
    yield _gauge(KUBERNETES_OBJECTS, {(): float(kubernetes.get("objects", 0))} if present else {})
    yield _gauge(ACME_RENEW_AT, {(r.hosts[0],): r.renew_at or 0.0 for r in view.acme})
    yield _gauge(WORKERS, {(): totals.workers})


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
