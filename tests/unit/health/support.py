"""Run-time services as health checks see them: endpoints and a slow-start window."""

from __future__ import annotations

from dataclasses import dataclass

from portway.balancing.endpoint import Endpoint


@dataclass
class Svc:
    """Satisfies ``portway.health.HasEndpoints`` as ``proxy.service.Service`` does."""

    endpoints: list[Endpoint]
    slow_start: float = 0.0


def services(spec: dict[str, list[str]], slow_start: float = 0.0) -> dict[str, Svc]:
    return {
        name: Svc([Endpoint.from_address(a, index=i) for i, a in enumerate(addrs)], slow_start)
        for name, addrs in spec.items()
    }


def healthy_flags(svcs: dict[str, Svc]) -> dict[str, list[bool]]:
    return {name: [e.healthy for e in s.endpoints] for name, s in svcs.items()}
