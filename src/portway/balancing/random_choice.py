"""Weighted random choice: endpoint ``i`` with probability ``weight_i / total weight``.

Named ``random_choice`` so that it does not shadow the standard library's ``random``.
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


class RandomBalancer(Balancer):
    __slots__ = ("_index", "_rng")

    def __init__(self, endpoints: Sequence[Endpoint], *, rng: random.Random | None = None) -> None:
        super().__init__(endpoints)
        self._index = WeightedIndex([e.weight for e in self.endpoints])
        self._rng = rng if rng is not None else random.Random()

    def pick_at(
        self, request: Request, exclude: Collection[Endpoint], now: float
    ) -> Endpoint | None:
        if not self.endpoints:
            return None
        endpoint = self.endpoints[self._index.draw(self._rng)]
        if (
            endpoint.healthy
            and endpoint.down_until <= now
            and (not exclude or endpoint not in exclude)
        ):
            return endpoint
        # Redrawing among the candidates keeps it exact: P(e) = w_e / the candidates' total weight.
        return choose_weighted(self.candidates(exclude, now), self._rng)


def choose_weighted(endpoints: Sequence[Endpoint], rng: random.Random) -> Endpoint | None:
    """One of ``endpoints`` drawn by weight, or None when empty; builds its table: slow path."""
    if not endpoints:
        return None
    if len(endpoints) == 1:
        return endpoints[0]
    return endpoints[WeightedIndex([e.weight for e in endpoints]).draw(rng)]
