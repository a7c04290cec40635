"""What every part of active health checking agrees on: the states and the slot layout.

The prober and the workers each derive a ``Layout`` from their own config. Slots follow the config:
services sorted by name, each service's instances in their configured order. The fingerprint hashes
exactly what decides the slot positions (service names and instance addresses, in that order), so
two processes whose fingerprints match agree on which slot is which instance, and two that do not
(one has reloaded, the other not yet) never read each other's slots.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from portway.balancing.endpoint import Endpoint
    from portway.config.model import Config


class HealthState(IntEnum):
    """One instance's state as shared; the values are the bytes stored on the board."""

    UNKNOWN = 0  # not checked yet, or its service has no health check: counts as healthy
    HEALTHY = 1
    UNHEALTHY = 2


class HasEndpoints(Protocol):
    """What health checks need of a run-time service (``proxy.service.Service`` is one)."""

    @property
    def endpoints(self) -> Sequence[Endpoint]: ...

    @property
    def slow_start(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Change:
    """An endpoint whose ``healthy`` flag a sink or reader just changed."""

    service: str
    address: str
    healthy: bool


@dataclass(frozen=True)
class Layout:
    """Slot numbers of every (service, instance index), and the fingerprint of that assignment."""

    services: tuple[tuple[str, tuple[str, ...]], ...]  # sorted by name; addresses in config order
    fingerprint: bytes
    size: int
    spans: dict[str, tuple[int, int]] = field(repr=False)  # name -> (first slot, instances)

    @classmethod
    def of(cls, services: Mapping[str, Sequence[str]]) -> Layout:
        """The layout for service name -> instance addresses (normalized ``host:port``)."""
        ordered = tuple((name, tuple(services[name])) for name in sorted(services))
        # JSON is an unambiguous encoding: no name or address can shift a boundary.
        encoded = json.dumps(ordered, separators=(",", ":")).encode("utf-8")
        fingerprint = hashlib.blake2b(encoded, digest_size=16).digest()
        spans: dict[str, tuple[int, int]] = {}
        size = 0
        for name, addresses in ordered:
            spans[name] = (size, len(addresses))
            size += len(addresses)
        return cls(ordered, fingerprint, size, spans)

    @classmethod
    def from_config(cls, config: Config) -> Layout:
        # InstanceConfig.address is already normalized as Endpoint.address is (format_host_port).
        return cls.of(
            {
                name: [i.address for i in service.instances]
                for name, service in config.services.items()
            }
        )

    @classmethod
    def from_services(cls, services: Mapping[str, HasEndpoints]) -> Layout:
        return cls.of({name: [e.address for e in s.endpoints] for name, s in services.items()})

    def slot(self, service: str, index: int) -> int | None:
        """The slot of instance ``index`` of ``service``; None when the layout has no such one."""
        span = self.spans.get(service)
        if span is None or not 0 <= index < span[1]:
            return None
        return span[0] + index


def set_health(endpoint: Endpoint, healthy: bool, slow_start: float, now: float) -> bool:
    """Apply a health state to ``endpoint``; True when it changed.

    A recovered instance starts its slow-start ramp (when the service has one) so it is not handed
    its full share at once, as ``balancing.health.ServiceHealth`` does in-process.
    """
    if endpoint.healthy == healthy:
        return False
    endpoint.healthy = healthy
    if healthy and slow_start > 0:
        endpoint.ramp_start = now
    return True
