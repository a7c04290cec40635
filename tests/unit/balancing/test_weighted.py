"""WeightedIndex: the precomputed weighted draw behind random and least_request."""

from __future__ import annotations

import random

import pytest

from portway.balancing.weighted import WeightedIndex

DRAWS = 20_000


def test_draw_follows_weights() -> None:
    index = WeightedIndex([1, 3, 6])
    rng = random.Random(1)
    counts = [0, 0, 0]
    for _ in range(DRAWS):
        counts[index.draw(rng)] += 1
    for count, expected in zip(counts, [0.1, 0.3, 0.6], strict=True):
        assert abs(count / DRAWS - expected) <= 0.02


def test_uniform_draw_covers_every_index() -> None:
    index = WeightedIndex([2, 2, 2, 2])
    rng = random.Random(2)
    counts = [0] * 4
    for _ in range(DRAWS):
        counts[index.draw(rng)] += 1
    assert all(abs(count / DRAWS - 0.25) <= 0.02 for count in counts)


@pytest.mark.parametrize("weights", [[1, 3, 6], [5, 5, 5], [1000, 1]])
def test_draw_other_never_returns_first_and_keeps_proportions(weights: list[int]) -> None:
    index = WeightedIndex(weights)
    rng = random.Random(3)
    for first in range(len(weights)):
        counts = [0] * len(weights)
        for _ in range(DRAWS // 4):
            counts[index.draw_other(rng, first)] += 1
        assert counts[first] == 0
        rest = sum(w for i, w in enumerate(weights) if i != first)
        for i, weight in enumerate(weights):
            if i != first:
                assert abs(counts[i] / (DRAWS // 4) - weight / rest) <= 0.03


def test_rejects_non_positive_weights() -> None:
    with pytest.raises(ValueError, match="positive"):
        WeightedIndex([1, 0])


def test_length() -> None:
    assert len(WeightedIndex([])) == 0
    assert len(WeightedIndex([4, 1])) == 2
