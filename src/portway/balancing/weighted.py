"""Weighted random draws over a fixed list of weights, precomputed so that a draw is one bisect."""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence


class WeightedIndex:
    """Draws index ``i`` with probability ``weights[i] / sum(weights)``.

    Equal weights skip the bisect. Weights are positive integers, so the cumulative sums are exact.
    """

    __slots__ = ("_cumulative", "_size", "_total", "_uniform")

    def __init__(self, weights: Sequence[int]) -> None:
        if any(weight < 1 for weight in weights):
            raise ValueError("weights must be positive integers")
        cumulative = []
        total = 0
        for weight in weights:
            total += weight
            cumulative.append(total)
        self._cumulative = cumulative
        self._total = total
        self._size = len(cumulative)
        self._uniform = len(set(weights)) <= 1

    def __len__(self) -> int:
        return self._size

    def draw(self, rng: random.Random) -> int:
        """A random index; the index list must not be empty."""
        if self._uniform:
            return int(rng.random() * self._size)
        return bisect_right(self._cumulative, rng.random() * self._total)

    def draw_other(self, rng: random.Random, first: int) -> int:
        """A random index other than ``first``, weighted among the rest; needs at least two indexes.

        Drawing from the total less ``first``'s weight and stepping over its interval is exact and
        never retries, however heavy ``first`` is.
        """
        if self._uniform:
            other = int(rng.random() * (self._size - 1))
            return other + 1 if other >= first else other
        cumulative = self._cumulative
        end = cumulative[first]
        weight = end - (cumulative[first - 1] if first else 0)
        point = rng.random() * (self._total - weight)
        if point >= end - weight:
            point += weight
        return bisect_right(cumulative, point)
