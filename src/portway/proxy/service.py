"""A logical service at run time: endpoints, balancer, pools, and the state that protects it.

One ``Service`` per configured service per worker. Besides the balancer and one connection pool per
endpoint it holds what resilience needs: the outlier detector (passive health), the counters the
circuit breaker and the retry budget read, the queue of requests waiting for a connection, and the
panic flag (too few instances available: send to all of them).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Collection
from typing import TYPE_CHECKING, Final

from portway.balancing import Balancer, Endpoint, make_balancer
from portway.balancing.endpoint import endpoints_from_config
from portway.balancing.outlier import FailureKind, OutlierDetector
from portway.balancing.ramp import accept_during_ramp, in_panic
from portway.config.model import ServiceConfig
from portway.config.types import format_host_port
from portway.deadlines import Sweeper
from portway.messages import Request
from portway.tls.contexts import upstream_tls
from portway.upstream.pool import Pool, PoolOwner

if TYPE_CHECKING:
    from portway.proxy.exchange import Exchange

_monotonic: Final = time.monotonic


class Service(PoolOwner):
    __slots__ = (
        "active_requests",
        "active_retries",
        "balancer",
        "config",
        "connect_retries",
        "connect_timeout",
        "endpoints",
        "first_byte_timeout",
        "max_connections",
        "max_pending",
        "max_requests",
        "name",
        "open_connections",
        "outlier",
        "panic",
        "panic_threshold",
        "pools",
        "read_timeout",
        "replay_limit",
        "request_timeout",
        "retry",
        "retry_statuses",
        "rewrite_host",
        "rng",
        "slow_start",
        "try_timeout",
        "waiting",
    )

    def __init__(
        self, name: str, config: ServiceConfig, loop: asyncio.AbstractEventLoop, sweeper: Sweeper
    ) -> None:
        self.name = name
        self.config = config
        self.endpoints: list[Endpoint] = endpoints_from_config(config)
        self.balancer: Balancer = make_balancer(config, self.endpoints)
        tls = upstream_tls(config.tls)
        self.pools: list[Pool] = [
            Pool(
                loop,
                sweeper,
                e.host,
                e.port,
                config.pool.max_idle,
                config.pool.idle_timeout,
                owner=self,
                tls=tls,
            )
            for e in self.endpoints
        ]
        self.outlier = OutlierDetector(
            config.outlier_detection, self.endpoints, slow_start=config.slow_start
        )
        self.connect_timeout = config.connect_timeout
        self.read_timeout = config.read_timeout
        self.try_timeout = config.try_timeout
        self.request_timeout = config.request_timeout
        self.connect_retries = config.connect_retries
        self.rewrite_host = config.rewrite_host
        self.retry = config.retries
        self.replay_limit = config.retries.buffer_limit  # request body bytes kept for a retry
        # How long a sent request may wait for its response head: the read timeout, or the try
        # timeout when that is shorter.
        first_byte = self.read_timeout
        if self.try_timeout and (not first_byte or self.try_timeout < first_byte):
            first_byte = self.try_timeout
        self.first_byte_timeout = first_byte
        self.retry_statuses = frozenset(config.retries.on_statuses)
        self.slow_start = config.slow_start
        self.panic_threshold = config.panic_threshold
        self.panic = False
        breaker = config.circuit_breaker
        self.max_connections = breaker.max_connections
        self.max_pending = breaker.max_pending
        self.max_requests = breaker.max_requests
        self.active_requests = 0
        self.active_retries = 0
        self.open_connections = 0
        self.waiting: deque[Exchange] = deque()
        self.rng = random.Random()

    # -- picking an instance -----------------------------------------------------------------------

    def pick(self, request: Request, exclude: Collection[Endpoint]) -> Endpoint | None:
        """An instance for ``request``: the balancer's choice, thinned during slow start; in panic
        (too few instances available) any instance not excluded, health ignored."""
        if not self.panic and not self.slow_start:
            return self.balancer.pick_at(request, exclude, _monotonic())
        if self.panic:
            candidates = (
                [e for e in self.endpoints if e not in exclude] if exclude else self.endpoints
            )
            return self.rng.choice(candidates) if candidates else None
        endpoint = self.balancer.pick(request, exclude)
        if endpoint is not None and endpoint.ramp_start and self.slow_start:
            now = time.monotonic()
            if not accept_during_ramp(endpoint, now, self.slow_start, self.rng):
                other = self.balancer.pick(request, [*exclude, endpoint])
                if other is not None:
                    return other
        return endpoint

    def failed(self, endpoint: Endpoint, kind: FailureKind) -> None:
        """A try on ``endpoint`` failed: tell the outlier detector; an ejection may start panic."""
        if self.outlier.failure(endpoint, kind):
            self.panic = in_panic(self.endpoints, time.monotonic(), self.panic_threshold)

    def retry_allowed(self) -> bool:
        """The retry budget: retries in flight stay a bounded share of requests in flight."""
        retry = self.retry
        budget = max(
            retry.min_concurrent_retries, self.active_requests * retry.budget_percent / 100
        )
        return self.active_retries < budget

    # -- connections and the circuit breaker ---------------------------------------------------------

    def may_open_connection(self) -> bool:
        return not self.max_connections or self.open_connections < self.max_connections

    def connection_closed(self) -> None:
        self.open_connections -= 1
        self.wake_waiting()

    def connection_released(self) -> None:
        if self.waiting:
            self.wake_waiting()

    def wake_waiting(self) -> None:
        """A connection came free or closed: let waiting requests try again, oldest first."""
        waiting = self.waiting
        while waiting:
            exchange = waiting.popleft()
            if not exchange.resume_from_wait():
                waiting.appendleft(exchange)
                return

    # -- upkeep ------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Periodic: ended ejections, and whether too few instances are left (panic)."""
        now = time.monotonic()  # the clock of Endpoint.down_until
        self.outlier.refresh(now)
        self.panic = in_panic(self.endpoints, now, self.panic_threshold)

    def host_header(self, endpoint: Endpoint) -> bytes:
        return format_host_port(endpoint.host, endpoint.port).encode("ascii")

    def retire(self) -> None:
        """Replaced by a new config: idle connections close now, busy ones when their exchange ends."""
        for pool in self.pools:
            pool.retire()

    def __repr__(self) -> str:
        return f"<Service {self.name} {len(self.endpoints)} endpoints>"

    def pick_stream(
        self, client_ip: str, exclude: Collection[Endpoint] = (), server_name: str = ""
    ) -> Endpoint | None:
        """An instance for an L4 stream (TLS passthrough), which has no HTTP request: ``pick`` as
        for a request that carries only the client IP and the SNI as its host. Health, ejections,
        panic and slow start apply; hashing on the client IP works, a header or cookie key is
        absent (a random pick), and a sticky cookie is never sent."""
        return self.pick(Request("", server_name, "/", client_ip=client_ip), exclude)
