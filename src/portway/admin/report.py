"""What a worker tells the admin API about itself: its statistics plus what only it knows.

``WorkerStats.snapshot()`` carries the counters. A worker adds the gauges read off its live state
(open client connections, per service its open upstream connections, and per instance: health as
this worker applies it, whether its outlier detector holds it ejected, requests in flight), what
its access log and tracer dropped, and which config it serves, so the admin API can say when every
worker serves the current one (``/readyz``).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from portway.admin.aggregate import ACCESS_LOG, SPANS
from portway.config.model import Config
from portway.server.context import WorkerContext


def config_fingerprint(config: Config) -> str:
    """Equal for equal configs in any process: the hash of the validated model's JSON dump."""
    return hashlib.blake2b(config.model_dump_json().encode("utf-8"), digest_size=16).hexdigest()


def telemetry_dropped(ctx: WorkerContext) -> list[list[Any]]:
    """Access-log lines and spans this worker dropped because their sink could not keep up
    (counters; both signals always listed, so a rate over them starts at 0)."""
    access_log, tracing = ctx.access_log, ctx.tracing
    return [
        [ACCESS_LOG, access_log.dropped if access_log is not None else 0],
        [SPANS, tracing.dropped if tracing is not None else 0],
    ]


def worker_report(ctx: WorkerContext, fingerprint: str) -> dict[str, Any]:
    """The document a worker publishes; call on the worker's event loop (it reads live state).

    ``fingerprint`` is ``config_fingerprint`` of the snapshot's config, computed once per snapshot
    by the caller rather than once per report.
    """
    snapshot = ctx.snapshot
    report = ctx.stats.snapshot()
    report["connections_open"] = len(ctx.connections)
    report["generation"] = snapshot.generation
    report["config_fingerprint"] = fingerprint
    now = time.monotonic()  # the outlier detector's clock
    instances: list[list[Any]] = []
    for name, service in snapshot.services.items():
        outlier = service.outlier
        for endpoint in service.endpoints:
            instances.append(
                [
                    name,
                    endpoint.address,
                    endpoint.healthy,
                    outlier.is_ejected(endpoint, now),
                    endpoint.active,
                ]
            )
    report["instances"] = instances
    report["upstream_connections"] = [
        [name, service.open_connections] for name, service in snapshot.services.items()
    ]
    report["rate_limits"] = snapshot.policies.state()
    report["telemetry_dropped"] = telemetry_dropped(ctx)
    report["certificates"] = [
        c
        for listener in ctx.listeners
        if listener.store is not None
        for c in listener.store.describe()
    ]
    return report
