"""Smooth weighted round robin, checked against nginx's algorithm (ngx_http_upstream_round_robin.c).

nginx's own comment on the algorithm: weights { 5, 1, 1 } give the sequence { a, a, b, a, c, a, a }.
"""

from __future__ import annotations

import pytest

from portway.balancing import Endpoint, RoundRobinBalancer
from portway.balancing import round_robin as round_robin_module
from portway.balancing.round_robin import smooth_weighted_sequence
from tests.unit.balancing.support import NOW, count_picks, make_endpoints, make_request, names


def pick_sequence(
    balancer: RoundRobinBalancer, picks: int, exclude: tuple[Endpoint, ...] = ()
) -> str:
    request = make_request()
    return names(balancer.pick_at(request, exclude, NOW) for _ in range(picks))


def test_nginx_sequence_for_weights_5_1_1() -> None:
    balancer = RoundRobinBalancer(make_endpoints(5, 1, 1))
    assert pick_sequence(balancer, 14) == "aabacaa" * 2


def test_weights_1_3_give_exactly_one_of_every_four_interleaved() -> None:
    balancer = RoundRobinBalancer(make_endpoints(1, 3))
    sequence = pick_sequence(balancer, 400)
    assert sequence.count("a") == 100 and sequence.count("b") == 300
    # Interleaved, not bursty: every window of four consecutive picks holds exactly one "a".
    assert all(sequence[i : i + 4].count("a") == 1 for i in range(len(sequence) - 3))


def test_equal_weights_rotate_in_order() -> None:
    balancer = RoundRobinBalancer(make_endpoints(1, 1, 1))
    assert pick_sequence(balancer, 9) == "abcabcabc"


def test_common_factor_does_not_change_the_sequence() -> None:
    scaled = RoundRobinBalancer(make_endpoints(10, 2, 2))
    assert pick_sequence(scaled, 14) == "aabacaa" * 2


def test_unhealthy_endpoint_skipped_others_keep_proportions() -> None:
    balancer = RoundRobinBalancer(make_endpoints(5, 1, 1))
    balancer.endpoints[1].healthy = False
    # a:c must stay 5:1; the period of the combined schedule is 7 x 6 = 42 picks.
    assert count_picks(balancer, 42 * 10) == [350, 0, 70]


def test_equal_weights_with_one_down_do_not_double_its_neighbour() -> None:
    balancer = RoundRobinBalancer(make_endpoints(1, 1, 1))
    balancer.endpoints[1].healthy = False
    assert count_picks(balancer, 600) == [300, 0, 300]


def test_weights_1_1_2_with_first_down() -> None:
    balancer = RoundRobinBalancer(make_endpoints(1, 1, 2))
    balancer.endpoints[0].down_until = NOW + 1.0
    assert count_picks(balancer, 1200) == [0, 400, 800]


def test_recovered_endpoint_rejoins_the_sequence() -> None:
    balancer = RoundRobinBalancer(make_endpoints(5, 1, 1))
    balancer.endpoints[2].healthy = False
    count_picks(balancer, 7)
    balancer.endpoints[2].healthy = True
    assert count_picks(balancer, 700) == [500, 100, 100]


def test_exclude_skips_without_touching_the_schedule_order() -> None:
    balancer = RoundRobinBalancer(make_endpoints(1, 1, 1))
    excluded = (balancer.endpoints[0],)
    assert pick_sequence(balancer, 1, excluded) in ("b", "c")
    # The retry consumed one schedule slot; the rotation continues after it.
    assert pick_sequence(balancer, 3) == "bca"


def test_large_total_weight_runs_without_a_schedule() -> None:
    balancer = RoundRobinBalancer(make_endpoints(10_000, 9_999, 1))
    assert balancer._schedule is None
    period = 20_000
    assert count_picks(balancer, period) == [10_000, 9_999, 1]


def test_schedule_and_direct_algorithm_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    weights = (7, 3, 2, 1)
    with_schedule = RoundRobinBalancer(make_endpoints(*weights))
    monkeypatch.setattr(round_robin_module, "MAX_SCHEDULE_LENGTH", 0)
    without_schedule = RoundRobinBalancer(make_endpoints(*weights))
    assert with_schedule._schedule is not None and without_schedule._schedule is None
    assert pick_sequence(with_schedule, 65) == pick_sequence(without_schedule, 65)


def test_smooth_weighted_sequence() -> None:
    assert smooth_weighted_sequence([5, 1, 1], 7) == [0, 0, 1, 0, 2, 0, 0]
    assert smooth_weighted_sequence([1, 3], 4) == [1, 0, 1, 1]
    assert smooth_weighted_sequence([], 0) == []
