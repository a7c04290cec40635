"""Least request by the power of two choices (Mitzenmacher 2001; Envoy's LEAST_REQUEST)."""

from __future__ import annotations

import random

from portway.balancing import Endpoint, LeastRequestBalancer
from portway.balancing.least_request import less_loaded
from tests.unit.balancing.support import count_picks, make_endpoints, shares

PICKS = 20_000
TOLERANCE = 0.03


def balancer_of(*weights: int, seed: int = 21) -> LeastRequestBalancer:
    return LeastRequestBalancer(make_endpoints(*weights), rng=random.Random(seed))


def test_idle_pool_follows_weights_1_3() -> None:
    first, second = shares(count_picks(balancer_of(1, 3), PICKS))
    assert abs(first - 0.25) <= TOLERANCE
    assert abs(second - 0.75) <= TOLERANCE


def test_idle_pool_equal_weights_is_even() -> None:
    counts = count_picks(balancer_of(1, 1, 1, 1), PICKS)
    assert all(abs(share - 0.25) <= TOLERANCE for share in shares(counts))


def test_two_endpoints_always_the_less_busy() -> None:
    balancer = balancer_of(1, 1)
    balancer.endpoints[0].active = 5
    assert count_picks(balancer, 1000) == [0, 1000]


def test_the_busiest_endpoint_never_wins() -> None:
    # Whatever it is paired with has fewer requests, so it can never be chosen.
    balancer = balancer_of(1, 1, 1, 1)
    balancer.endpoints[2].active = 10
    balancer.endpoints[0].active = 1
    counts = count_picks(balancer, PICKS)
    assert counts[2] == 0
    # The idle ones win every pairing with the other two, so they get the most.
    assert counts[1] > counts[0] and counts[3] > counts[0]


def test_load_is_compared_per_unit_of_weight() -> None:
    light = Endpoint("10.0.0.1", 80, weight=1, index=0)
    heavy = Endpoint("10.0.0.2", 80, weight=4, index=1)
    light.active, heavy.active = 2, 4  # 2 per unit against 1 per unit
    assert less_loaded(light, heavy) is heavy
    assert less_loaded(heavy, light) is heavy
    heavy.active = 8  # 2 per unit each: a tie goes to the first drawn
    assert less_loaded(light, heavy) is light
    assert less_loaded(heavy, light) is heavy


def test_weighted_pool_prefers_lower_load_per_weight() -> None:
    balancer = balancer_of(1, 4)
    balancer.endpoints[0].active = 2
    balancer.endpoints[1].active = 4
    assert count_picks(balancer, 500) == [0, 500]


def test_unavailable_endpoint_excluded_from_sampling() -> None:
    balancer = balancer_of(1, 1, 1)
    balancer.endpoints[0].healthy = False
    balancer.endpoints[1].active = 3
    # Only 1 and 2 remain and 2 is idle: it wins every pairing.
    assert count_picks(balancer, 500) == [0, 0, 500]


def test_exclude_leaves_one_candidate() -> None:
    balancer = balancer_of(1, 1, 1)
    balancer.endpoints[2].active = 50
    exclude = {balancer.endpoints[0], balancer.endpoints[1]}
    assert count_picks(balancer, 100, exclude=exclude) == [0, 0, 100]


def test_pick_with_exclude_of_unknown_endpoint_is_unaffected() -> None:
    balancer = balancer_of(1, 3)
    stranger = Endpoint("192.0.2.99", 80)
    counts = count_picks(balancer, PICKS, exclude=[stranger])
    assert abs(counts[0] / PICKS - 0.25) <= TOLERANCE
