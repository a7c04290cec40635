"""The snapshot a worker serves from, and how a new config becomes one.

``assemble`` is called once per accepted config in every worker. Services whose config did not
change are carried over whole (their pools keep their warm connections, their balancers their
state); changed or removed ones are retired once the new snapshot is live, so requests in flight on
them finish while new requests already use the new objects. The swap itself is one attribute
assignment, so every request sees either the old snapshot or the new one, never a mix.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from portway.config.model import Config
from portway.deadlines import Sweeper
from portway.policies import PolicyChain, PolicySet, build_policies
from portway.proxy.service import Service
from portway.routing import RouteTable, compile_routes


@dataclass(frozen=True, slots=True)
class Snapshot:
    config: Config
    routes: RouteTable[Service]
    services: dict[str, Service]
    generation: int
    policies: PolicySet
    # The policy chain of each route, by the route's index in the config (None: no policies).
    chains: tuple[PolicyChain | None, ...]

    def smallest_timeouts(self) -> list[float]:
        timeouts = []
        for service in self.services.values():
            timeouts += [
                service.connect_timeout,
                service.read_timeout,
                service.config.pool.idle_timeout,
                service.try_timeout,
                service.request_timeout,
            ]
        return [t for t in timeouts if t > 0]


def assemble(
    config: Config,
    previous: Snapshot | None,
    loop: asyncio.AbstractEventLoop,
    sweeper: Sweeper,
) -> Snapshot:
    old = previous.services if previous is not None else {}
    services: dict[str, Service] = {}
    for name, service_config in config.services.items():
        kept = old.get(name)
        if kept is not None and kept.config == service_config:
            services[name] = kept
        else:
            services[name] = Service(name, service_config, loop, sweeper)
    routes = compile_routes(config.routes, services, merge_slashes=config.server.merge_slashes)
    generation = previous.generation + 1 if previous is not None else 1
    policies = build_policies(config, previous.policies if previous is not None else None, loop)
    return Snapshot(
        config=config,
        routes=routes,
        services=services,
        generation=generation,
        policies=policies,
        chains=policies.chains,
    )


def retire_replaced(previous: Snapshot, current: Snapshot) -> None:
    """Retire the services and policies of ``previous`` that ``current`` does not use any more."""
    previous.policies.retire_replaced(current.policies)
    live = {id(s) for s in current.services.values()}
    for service in previous.services.values():
        if id(service) not in live:
            service.retire()
