"""Smooth weighted round robin, nginx's algorithm (ngx_http_upstream_get_peer).

Each pick adds every candidate's weight to its ``current``, takes the candidate with the largest
``current`` (the first on ties) and subtracts the candidates' total weight from it. Weights 5, 1, 1
give ``a a b a c a a``: proportional and interleaved rather than in bursts.

While every endpoint is a candidate the sequence repeats with a period of the total weight, so it
is computed once and a pick is a cursor step. A pick whose scheduled endpoint is unavailable or
excluded runs the algorithm itself over the candidates (a separate ``current`` state), so the
others keep their proportions among themselves.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from portway.balancing.base import Balancer
from portway.balancing.endpoint import Endpoint

if TYPE_CHECKING:
    from portway.messages import Request

# A schedule costs one slot per unit of (gcd-reduced) total weight and total x count steps to build;
# beyond these every pick runs the algorithm, O(endpoints).
MAX_SCHEDULE_LENGTH = 1 << 14
MAX_SCHEDULE_BUILD_STEPS = 1 << 18


def smooth_weighted_sequence(weights: Sequence[int], length: int) -> list[int]:
    """The first ``length`` indexes smooth weighted round robin picks when all are candidates."""
    total = sum(weights)
    current = [0] * len(weights)
    sequence = []
    for _ in range(length):
        best = 0
        for i, weight in enumerate(weights):
            current[i] += weight
            if current[i] > current[best]:
                best = i
        current[best] -= total
        sequence.append(best)
    return sequence


class RoundRobinBalancer(Balancer):
    __slots__ = ("_current", "_cursor", "_schedule", "_weights")

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        super().__init__(endpoints)
        # Scaling all weights by one factor leaves the sequence unchanged: reduce by the gcd.
        divisor = math.gcd(*(e.weight for e in self.endpoints)) or 1
        self._weights = [e.weight // divisor for e in self.endpoints]
        period = sum(self._weights)
        self._schedule: tuple[Endpoint, ...] | None = None
        build_steps = period * len(self._weights)
        if 0 < period <= MAX_SCHEDULE_LENGTH and build_steps <= MAX_SCHEDULE_BUILD_STEPS:
            order = smooth_weighted_sequence(self._weights, period)
            self._schedule = tuple(self.endpoints[i] for i in order)
        self._cursor = 0
        self._current = [0] * len(self.endpoints)

    def pick_at(
        self, request: Request, exclude: Collection[Endpoint], now: float
    ) -> Endpoint | None:
        schedule = self._schedule
        if schedule is not None:
            cursor = self._cursor
            endpoint = schedule[cursor]
            cursor += 1
            self._cursor = 0 if cursor == len(schedule) else cursor
            if (
                endpoint.healthy
                and endpoint.down_until <= now
                and (not exclude or endpoint not in exclude)
            ):
                return endpoint
        return self._pick_among_candidates(exclude, now)

    def _pick_among_candidates(self, exclude: Collection[Endpoint], now: float) -> Endpoint | None:
        weights = self._weights
        current = self._current
        best = -1
        best_current = 0
        total = 0
        for i, endpoint in enumerate(self.endpoints):
            if not (endpoint.healthy and endpoint.down_until <= now):
                continue
            if exclude and endpoint in exclude:
                continue
            weight = weights[i]
            total += weight
            value = current[i] + weight
            current[i] = value
            if best < 0 or value > best_current:
                best = i
                best_current = value
        if best < 0:
            return None
        current[best] -= total
        return self.endpoints[best]
