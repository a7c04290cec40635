"""One instance of a service, with the mutable state the data plane and health checks keep on it."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from portway.config.types import format_host_port, parse_host_port

if TYPE_CHECKING:
    from portway.config.model import ServiceConfig


def endpoint_key(address: str) -> str:
    """A stable opaque id for ``address``: sticky cookies carry it so addresses do not leak."""
    return hashlib.sha256(address.encode("utf-8")).hexdigest()[:16]


class Endpoint:
    """An instance (``host:port``) of a service.

    ``index`` is the endpoint's position in its service: per-endpoint state elsewhere lives in
    lists indexed by it. ``active`` counts in-flight requests (the data plane maintains it),
    ``healthy`` is set by health checks and ``down_until`` is the ``time.monotonic()`` deadline of
    a passive back-off after a connect failure.
    """

    __slots__ = (
        "active",
        "address",
        "down_until",
        "ejections",
        "healthy",
        "host",
        "index",
        "key",
        "port",
        "ramp_start",
        "weight",
    )

    def __init__(self, host: str, port: int, weight: int = 1, index: int = 0) -> None:
        if not host:
            raise ValueError("an endpoint needs a host")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be from 0 to 65535, got {port}")
        if weight < 1:
            raise ValueError(f"weight must be at least 1, got {weight}")
        if index < 0:
            raise ValueError(f"index cannot be negative, got {index}")
        self.host = host
        self.port = port
        self.weight = weight
        self.index = index
        self.address = format_host_port(host, port)
        self.key = endpoint_key(self.address)
        self.active = 0
        self.healthy = True
        self.down_until = 0.0
        self.ejections = 0  # outlier ejections so far: each lasts longer than the one before
        self.ramp_start = 0.0  # monotonic time slow start began (new or recovered); 0: none

    @classmethod
    def from_address(cls, address: str, weight: int = 1, index: int = 0) -> Endpoint:
        """``"host:port"`` or ``"[v6]:port"`` -> an endpoint; ValueError when malformed."""
        host, port = parse_host_port(address)
        return cls(host, port, weight, index)

    def available(self, now: float) -> bool:
        """May take a request at monotonic time ``now``: healthy and not backing off."""
        return self.healthy and self.down_until <= now

    def mark_down(self, seconds: float) -> None:
        """Back off for ``seconds`` from now; an already longer back-off is kept."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"a back-off must be a finite number of seconds >= 0, got {seconds}")
        self.down_until = max(self.down_until, time.monotonic() + seconds)

    def __repr__(self) -> str:
        return (
            f"<Endpoint #{self.index} {self.address} weight={self.weight} active={self.active}"
            f"{'' if self.healthy else ' unhealthy'}>"
        )


def endpoints_from_config(service: ServiceConfig) -> list[Endpoint]:
    """The endpoints of a statically configured service, indexed in config order."""
    endpoints = []
    for index, instance in enumerate(service.instances):
        endpoint = Endpoint.from_address(instance.address, instance.weight, index)
        endpoints.append(endpoint)
    return endpoints


def check_positions(endpoints: Sequence[Endpoint]) -> None:
    """Per-endpoint state is kept in lists indexed by ``endpoint.index``: it must be the position."""
    for position, endpoint in enumerate(endpoints):
        if endpoint.index != position:
            raise ValueError(
                f"endpoint {endpoint.address} has index {endpoint.index} "
                f"but is at position {position}"
            )


def check_slow_start(slow_start: float) -> None:
    if not (math.isfinite(slow_start) and slow_start >= 0):
        raise ValueError(f"slow_start must be a finite number of seconds >= 0, got {slow_start}")
