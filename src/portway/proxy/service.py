"""A logical service at run time: its endpoints, its balancer and one connection pool per endpoint."""

from __future__ import annotations

import asyncio

from portway.balancing import Balancer, Endpoint, make_balancer
from portway.balancing.endpoint import endpoints_from_config
from portway.config.model import ServiceConfig
from portway.config.types import format_host_port
from portway.deadlines import Sweeper
from portway.upstream.pool import Pool

# How long an instance that refused a connection is skipped before it is tried again. A fixed,
# short passive back-off; outlier detection with growing ejections is a separate policy.
CONNECT_FAILURE_BACKOFF = 1.0


class Service:
    __slots__ = (
        "balancer",
        "config",
        "connect_retries",
        "connect_timeout",
        "endpoints",
        "name",
        "pools",
        "read_timeout",
        "rewrite_host",
    )

    def __init__(
        self, name: str, config: ServiceConfig, loop: asyncio.AbstractEventLoop, sweeper: Sweeper
    ) -> None:
        self.name = name
        self.config = config
        self.endpoints: list[Endpoint] = endpoints_from_config(config)
        self.balancer: Balancer = make_balancer(config, self.endpoints)
        self.pools: list[Pool] = [
            Pool(loop, sweeper, e.host, e.port, config.pool.max_idle, config.pool.idle_timeout)
            for e in self.endpoints
        ]
        self.connect_timeout = config.connect_timeout
        self.read_timeout = config.read_timeout
        self.connect_retries = config.connect_retries
        self.rewrite_host = config.rewrite_host

    def host_header(self, endpoint: Endpoint) -> bytes:
        return format_host_port(endpoint.host, endpoint.port).encode("ascii")

    def retire(self) -> None:
        """Replaced by a new config: idle connections close now, busy ones when their exchange ends."""
        for pool in self.pools:
            pool.retire()

    def __repr__(self) -> str:
        return f"<Service {self.name} {len(self.endpoints)} endpoints>"
