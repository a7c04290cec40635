"""Every Prometheus metric Portway exposes: its name, type, help and labels.

The one place metric names are defined; ``metrics`` renders them from the aggregated totals.
Label values are bounded: route, service and instance names come from the config, methods from a
fixed set (anything else is ``OTHER``), status classes and error causes are fixed sets.
"""

from __future__ import annotations

from dataclasses import dataclass

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
UPSTREAM_CONNECTIONS_OPEN = MetricSpec(
    "portway_upstream_connections_open",
    "gauge",
    "Connections to a service's instances open (busy or idle in the pool), all workers.",
    ("service",),
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
TELEMETRY_DROPPED = MetricSpec(
    "portway_telemetry_dropped_total",
    "counter",
    "Access-log lines and spans dropped because their sink could not keep up (a log file on a "
    "full or slow disk, an OTLP collector slower than the traffic), by signal: access_log, spans.",
    ("signal",),
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
    UPSTREAM_CONNECTIONS_OPEN,
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
    TELEMETRY_DROPPED,
    WORKERS,
)
