"""What every client connection of one worker shares: the live snapshot, settings, the sweeper."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from portway.config.model import ServerConfig
from portway.config.types import networks
from portway.dataplane import Snapshot
from portway.deadlines import Sweeper
from portway.observability.access_log import AccessLog
from portway.observability.stats import WorkerStats
from portway.observability.trace_context import Propagator

if TYPE_CHECKING:
    from portway.observability.tracing import Tracing
    from portway.server.listeners import Listener


class WorkerContext:
    """Shared by the connections of one worker. ``snapshot`` is swapped whole on reload."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        server: ServerConfig,
        snapshot: Snapshot,
        sweeper: Sweeper,
    ) -> None:
        self.loop = loop
        self.snapshot = snapshot
        self.sweeper = sweeper
        limits, timeouts = server.limits, server.timeouts
        self.max_request_line = limits.max_request_line
        self.max_header_bytes = limits.max_header_bytes
        self.max_header_count = limits.max_header_count
        self.max_body = limits.max_body_bytes
        self.header_timeout = timeouts.header
        self.keepalive_timeout = timeouts.keepalive
        self.body_timeout = timeouts.body
        self.trusted_proxies = networks(server.trusted_proxies)
        self.explain_from = networks(server.explain_from)
        self.merge_slashes = server.merge_slashes
        self.connections: set[asyncio.Protocol] = set()
        self.listeners: list[Listener] = []  # filled by the gateway as it starts them
        self.draining = False
        self.stats = WorkerStats()
        self.access_log = AccessLog(server.access_log, loop) if server.access_log.enabled else None
        self.tracing: Tracing | None = None
        if server.tracing.enabled:
            # Imported only when spans are exported: the OpenTelemetry SDK takes ~0.25 s to load.
            from portway.observability.tracing import Tracing

            self.tracing = Tracing(server.tracing)
        self.propagator = (
            self.tracing.propagator
            if self.tracing is not None
            else Propagator(server.tracing.sample_ratio)
        )

    @property
    def smallest_timeout(self) -> float:
        server_timeouts = [self.header_timeout, self.keepalive_timeout, self.body_timeout]
        hello = [
            lr.config.passthrough.client_hello_timeout
            for lr in self.listeners
            if lr.config.passthrough is not None
        ]
        # Certificate files are checked on sweeps: a short reload_interval needs frequent ones.
        reloads = [lr.store.policy.reload_interval for lr in self.listeners if lr.store is not None]
        timeouts = server_timeouts + hello + reloads
        return min([t for t in timeouts if t > 0] + self.snapshot.smallest_timeouts())
