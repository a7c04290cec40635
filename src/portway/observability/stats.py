"""Per-worker request statistics: plain counters on the hot path, a JSON snapshot off it.

Recording a request is a few dict and list updates keyed by bounded labels (route and service
names from the config, a method from a fixed set, a status class), never by raw paths. Every second
or so the worker serializes ``snapshot()`` for the admin process, which sums the workers and renders
Prometheus metrics: aggregation happens there, not per request.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any, Final

# Seconds. Gateway-local answers take microseconds; upstream calls milliseconds to seconds. Typed
# as a tuple of any length: compiled by mypyc, a fixed-length tuple type would be a C struct, boxed
# again (13 new floats) at every lookup.
DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def bucket(seconds: float) -> int:
    """The index of the first bucket bound at or above ``seconds`` (``bisect_left`` of
    ``DURATION_BUCKETS``), by comparisons: compiled, each is a native one, where ``bisect`` compares
    boxed floats through the object protocol (two a request, ~700 instructions between them).
    Most requests take one or two steps."""
    index = 0
    for bound in DURATION_BUCKETS:
        if seconds <= bound:
            return index
        index += 1
    return index


METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})
STATUS_CLASSES: Final[tuple[str, ...]] = ("1xx", "1xx", "2xx", "3xx", "4xx", "5xx")
NO_ROUTE = ""  # the route and service labels of a request that matched no route
RECENT_RELOADS = 10  # reload attempts remembered for the admin API and dashboard
_ERROR_TEXT = 2000  # characters of a refused config's error kept per event


def reload_event(when: float, ok: bool, error: str | None) -> list[Any]:
    """[unix time, accepted, why not (the config errors, trimmed)] of one reload attempt."""
    return [when, ok, error[:_ERROR_TEXT] if error else None]


class Histogram:
    """Cumulative-on-export histogram: per-bucket counts (the last is +Inf), sum and count."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bucket(seconds)] += 1
        self.total += seconds

    def export(self) -> list[Any]:
        return [self.counts, self.total]


class RouteCounters:
    """The counters of one (route, service) pair: what a finished request updates.

    Requests are counted by method and status as they come and folded into (method label, status
    class) only by ``WorkerStats.snapshot``: the hot path does two dict lookups, no classification.
    """

    __slots__ = ("bytes_in", "bytes_out", "duration", "requests", "upstream")

    def __init__(self) -> None:
        self.requests: dict[str, dict[int, int]] = {}  # method -> status -> count
        self.duration = Histogram()
        self.upstream: Histogram | None = None  # the service's, once an upstream answered
        self.bytes_in = 0
        self.bytes_out = 0


def status_class(status: int) -> str:
    return STATUS_CLASSES[status // 100] if 100 <= status < 600 else "5xx"


class WorkerStats:
    """Everything one worker counts. Single-threaded: only the event loop touches it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.started = time.time()
        self.routes: dict[tuple[str, str], RouteCounters] = {}
        # The counters the last request used: requests in a row mostly take the same route.
        self._last_route = ""
        self._last_service = ""
        self._last_counters: RouteCounters | None = None
        self.upstream_duration: dict[str, Histogram] = {}
        self.retries: dict[str, int] = {}
        self.overflows: dict[tuple[str, str], int] = {}
        # Outlier ejections started, by (service, instance address): events, not the state.
        self.ejections: dict[tuple[str, str], int] = {}
        self.errors: dict[str, int] = {}  # portway-error causes of local answers
        # Requests a policy refused, by (route, policy, kind, reason).
        self.policy_rejections: dict[tuple[str, str, str, str], int] = {}
        self.connections_total = 0
        # TLS passthrough: connections by (listener, service, outcome), where the service is ""
        # when none was chosen and the outcome one of server.passthrough.OUTCOMES; bytes relayed
        # by (service, "in" from clients or "out" to them).
        self.passthrough_connections: dict[tuple[str, str, str], int] = {}
        self.passthrough_bytes: dict[tuple[str, str], int] = {}
        # WebSocket tunnels by (route, service, outcome: proxy.upgrade.TUNNEL_OUTCOMES) when they
        # end (or when the upstream refused the handshake), and those open now.
        self.tunnels: dict[tuple[str, str, str], int] = {}
        self.tunnels_open = 0
        # (listener, "ok" or why the handshake failed) and (listener, "ok"/"failed")
        self.tls_handshakes: dict[tuple[str, str], int] = {}
        self.certificate_reloads: dict[tuple[str, str], int] = {}
        self.reloads_ok = 0
        self.reloads_failed = 0
        self.last_reload_ok = 0.0
        self.reload_events: deque[list[Any]] = deque(maxlen=RECENT_RELOADS)

    def counters(self, route: str, service: str) -> RouteCounters:
        """The counters of ``(route, service)``, created on first use."""
        key = (route, service)
        found = self.routes.get(key)
        if found is None:
            found = self.routes[key] = RouteCounters()
        return found

    def _upstream_histogram(self, service: str) -> Histogram:
        histogram = self.upstream_duration.get(service)
        if histogram is None:
            histogram = self.upstream_duration[service] = Histogram()
        return histogram

    def record(
        self,
        route: str,
        service: str,
        method: str,
        status: int,
        seconds: float,
        upstream_seconds: float,
        bytes_in: int,
        bytes_out: int,
        cause: bytes | None,
    ) -> None:
        counters = self._last_counters
        if counters is None or route is not self._last_route or service is not self._last_service:
            counters = self.routes.get((route, service))
            if counters is None:
                counters = self.counters(route, service)
            self._last_route = route
            self._last_service = service
            self._last_counters = counters
        by_status = counters.requests.get(method)
        if by_status is None:
            by_status = counters.requests[method] = {}
        by_status[status] = by_status.get(status, 0) + 1
        histogram = counters.duration
        histogram.counts[bucket(seconds)] += 1
        histogram.total += seconds
        if upstream_seconds >= 0 and service:
            upstream = counters.upstream
            if upstream is None:
                upstream = counters.upstream = self._upstream_histogram(service)
            upstream.counts[bucket(upstream_seconds)] += 1
            upstream.total += upstream_seconds
        counters.bytes_in += bytes_in
        counters.bytes_out += bytes_out
        if cause is not None:
            name = cause.decode("ascii")
            self.errors[name] = self.errors.get(name, 0) + 1

    def retried(self, service: str) -> None:
        self.retries[service] = self.retries.get(service, 0) + 1

    def overflowed(self, service: str, limit: str) -> None:
        key = (service, limit)
        self.overflows[key] = self.overflows.get(key, 0) + 1

    def instance_ejected(self, service: str, address: str) -> None:
        key = (service, address)
        self.ejections[key] = self.ejections.get(key, 0) + 1

    def policy_rejected(self, route: str, policy: str, kind: str, reason: str) -> None:
        key = (route, policy, kind, reason)
        self.policy_rejections[key] = self.policy_rejections.get(key, 0) + 1

    def handshake(self, listener: str, result: str) -> None:
        key = (listener, result)
        self.tls_handshakes[key] = self.tls_handshakes.get(key, 0) + 1

    def certificate_reloaded(self, listener: str, ok: bool) -> None:
        key = (listener, "ok" if ok else "failed")
        self.certificate_reloads[key] = self.certificate_reloads.get(key, 0) + 1

    def passthrough_ended(
        self, listener: str, service: str, outcome: str, bytes_in: int, bytes_out: int
    ) -> None:
        key = (listener, service, outcome)
        connections = self.passthrough_connections
        connections[key] = connections.get(key, 0) + 1
        if service:
            relayed = self.passthrough_bytes
            relayed[service, "in"] = relayed.get((service, "in"), 0) + bytes_in
            relayed[service, "out"] = relayed.get((service, "out"), 0) + bytes_out

    def tunnel_opened(self) -> None:
        self.tunnels_open += 1

    def tunnel_ended(self, route: str, service: str, outcome: str) -> None:
        """A tunnel closed (it was counted open), or a handshake was refused (it was not)."""
        if outcome != "refused":
            self.tunnels_open -= 1
        key = (route, service, outcome)
        self.tunnels[key] = self.tunnels.get(key, 0) + 1

    def reloaded(self, ok: bool, error: str | None = None) -> None:
        now = time.time()
        if ok:
            self.reloads_ok += 1
            self.last_reload_ok = now
        else:
            self.reloads_failed += 1
        self.reload_events.append(reload_event(now, ok, error))

    def snapshot(self) -> dict[str, Any]:
        """Everything, as JSON-able data (label tuples become lists)."""
        return {
            "pid": self.pid,
            "started": self.started,
            "time": time.time(),
            "buckets": list(DURATION_BUCKETS),
            "requests": [[*k, v] for k, v in self._requests().items()],
            "duration": [[*k, *c.duration.export()] for k, c in self.routes.items()],
            "upstream_duration": [[k, *h.export()] for k, h in self.upstream_duration.items()],
            "bytes_in": [[*k, c.bytes_in] for k, c in self.routes.items()],
            "bytes_out": [[*k, c.bytes_out] for k, c in self.routes.items()],
            "retries": [[k, v] for k, v in self.retries.items()],
            "overflows": [[*k, v] for k, v in self.overflows.items()],
            "ejections": [[*k, v] for k, v in self.ejections.items()],
            "errors": [[k, v] for k, v in self.errors.items()],
            "policy_rejections": [[*k, v] for k, v in self.policy_rejections.items()],
            "connections_total": self.connections_total,
            "passthrough_connections": [[*k, v] for k, v in self.passthrough_connections.items()],
            "passthrough_bytes": [[*k, v] for k, v in self.passthrough_bytes.items()],
            "tunnels": [[*k, v] for k, v in self.tunnels.items()],
            "tunnels_open": self.tunnels_open,
            "tls_handshakes": [[*k, v] for k, v in self.tls_handshakes.items()],
            "certificate_reloads": [[*k, v] for k, v in self.certificate_reloads.items()],
            "reloads_ok": self.reloads_ok,
            "reloads_failed": self.reloads_failed,
            "last_reload_ok": self.last_reload_ok,
            "reload_events": list(self.reload_events),
        }

    def _requests(self) -> dict[tuple[str, str, str, str], int]:
        """Request counts by (route, service, method label, status class)."""
        folded: dict[tuple[str, str, str, str], int] = {}
        for (route, service), counters in self.routes.items():
            for method, by_status in counters.requests.items():
                label = method if method in METHODS else "OTHER"
                for status, count in by_status.items():
                    labels = (route, service, label, status_class(status))
                    folded[labels] = folded.get(labels, 0) + count
        return folded
