"""Weighted random choice: proportions within +-3 percentage points over 20,000 picks."""

from __future__ import annotations

import random

from portway.balancing import RandomBalancer
from portway.balancing.random_choice import choose_weighted
from tests.unit.balancing.support import NOW, count_picks, make_endpoints, make_request, shares

PICKS = 20_000
TOLERANCE = 0.03


def test_weights_1_3_give_25_and_75_percent() -> None:
    balancer = RandomBalancer(make_endpoints(1, 3), rng=random.Random(11))
    first, second = shares(count_picks(balancer, PICKS))
    assert abs(first - 0.25) <= TOLERANCE
    assert abs(second - 0.75) <= TOLERANCE


def test_equal_weights_are_uniform() -> None:
    balancer = RandomBalancer(make_endpoints(2, 2, 2, 2), rng=random.Random(12))
    assert all(abs(share - 0.25) <= TOLERANCE for share in shares(count_picks(balancer, PICKS)))


def test_unavailable_endpoint_share_goes_to_the_others_by_weight() -> None:
    balancer = RandomBalancer(make_endpoints(4, 1, 2), rng=random.Random(13))
    balancer.endpoints[0].healthy = False
    counts = count_picks(balancer, PICKS)
    assert counts[0] == 0
    assert abs(counts[1] / PICKS - 1 / 3) <= TOLERANCE
    assert abs(counts[2] / PICKS - 2 / 3) <= TOLERANCE


def test_same_seed_same_picks() -> None:
    first = RandomBalancer(make_endpoints(1, 2, 3), rng=random.Random(5))
    second = RandomBalancer(make_endpoints(1, 2, 3), rng=random.Random(5))
    assert count_picks(first, 50) == count_picks(second, 50)


def test_choose_weighted() -> None:
    endpoints = make_endpoints(1, 9)
    rng = random.Random(14)
    assert choose_weighted([], rng) is None
    assert choose_weighted(endpoints[:1], rng) is endpoints[0]
    heavy = sum(choose_weighted(endpoints, rng) is endpoints[1] for _ in range(PICKS))
    assert abs(heavy / PICKS - 0.9) <= TOLERANCE


def test_default_rng_reaches_every_endpoint() -> None:
    balancer = RandomBalancer(make_endpoints(1, 1))
    request = make_request()
    # Missing one endpoint in 200 fair draws has probability 2 * 2**-200.
    picked = {balancer.pick_at(request, (), NOW) for _ in range(200)}
    assert picked == set(balancer.endpoints)
