"""The balancer interface and the factory that builds a service's configured algorithm."""

from __future__ import annotations

import abc
import random
import time
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from portway.balancing.endpoint import Endpoint, check_positions

if TYPE_CHECKING:
    from portway.config.model import ServiceConfig
    from portway.messages import Request


class Balancer(abc.ABC):
    """Picks one endpoint of a service per request.

    An endpoint is a candidate when it is available (healthy, not backing off) and not in
    ``exclude``, which holds the endpoints a retry already failed to connect to. ``pick`` returns
    None when no endpoint is a candidate; the caller answers 503. A balancer belongs to one worker
    and is not shared between threads.
    """

    __slots__ = ("endpoints",)

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        if type(self) is Balancer:  # compiled by mypyc, ABCMeta no longer refuses it by itself
            raise TypeError("Balancer is abstract: instantiate an algorithm")
        check_positions(endpoints)
        self.endpoints: tuple[Endpoint, ...] = tuple(endpoints)

    def pick(self, request: Request, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        """A candidate endpoint for ``request``, or None when there is none."""
        return self.pick_at(request, exclude, time.monotonic())

    @abc.abstractmethod
    def pick_at(
        self, request: Request, exclude: Collection[Endpoint], now: float
    ) -> Endpoint | None:
        """``pick`` at monotonic time ``now``; wrappers pass their ``now`` to the inner one."""

    def candidates(self, exclude: Collection[Endpoint], now: float) -> list[Endpoint]:
        """The endpoints that may be picked; for slow paths, as it builds a list."""
        endpoints = self.endpoints
        if exclude:
            return [e for e in endpoints if e.healthy and e.down_until <= now and e not in exclude]
        return [e for e in endpoints if e.healthy and e.down_until <= now]

    def has_candidate(self, exclude: Collection[Endpoint], now: float) -> bool:
        return any(
            e.healthy and e.down_until <= now and (not exclude or e not in exclude)
            for e in self.endpoints
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {len(self.endpoints)} endpoints>"


def make_balancer(
    service: ServiceConfig, endpoints: Sequence[Endpoint], *, rng: random.Random | None = None
) -> Balancer:
    """The balancer ``service.algorithm`` names over ``endpoints``, sticky when configured.

    ``rng`` drives the random choices (tests pass a seeded one); by default each has its own.
    """
    # Imported here: every algorithm module imports Balancer from this one.
    from portway.balancing.hashing import MaglevBalancer, RingHashBalancer
    from portway.balancing.least_request import LeastRequestBalancer
    from portway.balancing.random_choice import RandomBalancer
    from portway.balancing.round_robin import RoundRobinBalancer
    from portway.balancing.sticky import StickyBalancer

    algorithm = service.algorithm
    balancer: Balancer
    if algorithm == "round_robin":
        balancer = RoundRobinBalancer(endpoints)
    elif algorithm == "least_request":
        balancer = LeastRequestBalancer(endpoints, rng=rng)
    elif algorithm == "random":
        balancer = RandomBalancer(endpoints, rng=rng)
    elif algorithm == "ring_hash":
        balancer = RingHashBalancer(endpoints, service.hash_on, rng=rng)
    elif algorithm == "maglev":
        balancer = MaglevBalancer(endpoints, service.hash_on, rng=rng)
    else:
        raise ValueError(f"unknown balancing algorithm {algorithm!r}")
    if service.sticky is not None:
        balancer = StickyBalancer(balancer, service.sticky)
    return balancer
