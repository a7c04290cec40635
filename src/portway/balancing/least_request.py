"""Least request by the power of two choices (Mitzenmacher; Envoy's LEAST_REQUEST).

Two distinct endpoints are drawn at random, weighted by weight, and the one with fewer in-flight
requests per unit of weight wins; ties go to the first drawn, which keeps an idle pool's picks
proportional to weight. Looking at two instead of all endpoints keeps a pick O(log n) and avoids
every worker herding onto the same momentarily least loaded endpoint.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from portway.balancing.base import Balancer
from portway.balancing.endpoint import Endpoint
from portway.balancing.weighted import WeightedIndex

if TYPE_CHECKING:
    from portway.messages import Request


def less_loaded(first: Endpoint, second: Endpoint) -> Endpoint:
    """The endpoint with fewer active requests per unit of weight; ``first`` on ties."""
    # Cross-multiplied: active/weight compared without floats.
    if second.active * first.weight < first.active * second.weight:
        return second
    return first


class LeastRequestBalancer(Balancer):
    __slots__ = ("_index", "_rng")

    def __init__(self, endpoints: Sequence[Endpoint], *, rng: random.Random | None = None) -> None:
        super().__init__(endpoints)
        self._index = WeightedIndex([e.weight for e in self.endpoints])
        self._rng = rng if rng is not None else random.Random()

    def pick_at(
        self, request: Request, exclude: Collection[Endpoint], now: float
    ) -> Endpoint | None:
        endpoints = self.endpoints
        if len(endpoints) >= 2:
            index = self._index
            first_index = index.draw(self._rng)
            first = endpoints[first_index]
            second = endpoints[index.draw_other(self._rng, first_index)]
            if (
                first.healthy
                and first.down_until <= now
                and second.healthy
                and second.down_until <= now
                and (not exclude or (first not in exclude and second not in exclude))
            ):
                return less_loaded(first, second)
        return self._pick_among_candidates(exclude, now)

    def _pick_among_candidates(self, exclude: Collection[Endpoint], now: float) -> Endpoint | None:
        candidates = self.candidates(exclude, now)
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        index = WeightedIndex([e.weight for e in candidates])
        first_index = index.draw(self._rng)
        second_index = index.draw_other(self._rng, first_index)
        return less_loaded(candidates[first_index], candidates[second_index])
