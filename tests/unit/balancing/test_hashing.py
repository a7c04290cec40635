"""Consistent hashing: ketama-style ring hash and Maglev (Eisenbud et al., NSDI 2016, §3.4).

Tolerances are absolute percentage points over 20,000 keys: maglev +-5 around an even share,
ring hash +-10 (160 points per weight unit leave a few percent of unevenness between endpoints).
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time
from collections import Counter

import pytest

from portway.balancing import Endpoint, MaglevBalancer, RingHashBalancer
from portway.balancing.hashing import (
    MAX_RING_POINTS,
    hash64,
    hash_key_getter,
    is_prime,
    maglev_table,
)
from portway.config.model import HashOn
from tests.unit.balancing.support import NOW, make_endpoints, make_request, shares

KEYS = [f"198.51.{i // 250}.{i % 250}" for i in range(20_000)]
HashBalancer = RingHashBalancer | MaglevBalancer
KINDS: list[type[HashBalancer]] = [RingHashBalancer, MaglevBalancer]
SPREAD_TOLERANCE: dict[type[HashBalancer], float] = {RingHashBalancer: 0.10, MaglevBalancer: 0.05}


def by_ip(balancer: HashBalancer, key: str, exclude: tuple[Endpoint, ...] = ()) -> Endpoint:
    endpoint = balancer.pick_at(make_request(client_ip=key), exclude, NOW)
    assert endpoint is not None
    return endpoint


def key_shares(balancer: HashBalancer) -> list[float]:
    counts = [0] * len(balancer.endpoints)
    for key in KEYS:
        counts[by_ip(balancer, key).index] += 1
    return shares(counts)


def reindexed(endpoints: list[Endpoint]) -> list[Endpoint]:
    return [Endpoint(e.host, e.port, e.weight, i) for i, e in enumerate(endpoints)]


# ------------------------------------------------------------------------------------------ keys


def test_hash64_is_blake2b_and_stable_across_processes() -> None:
    expected = int.from_bytes(hashlib.blake2b(b"user-42", digest_size=8).digest(), "big")
    assert hash64("user-42") == expected
    # Python's hash() is salted per process; ours must not be.
    code = "from portway.balancing.hashing import hash64; print(hash64('user-42'))"
    output = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert int(output) == expected


def test_key_getter_sources() -> None:
    request = make_request(
        client_ip="203.0.113.9", headers=[("X-User", "alice"), ("Cookie", "sid=s1; other=2")]
    )
    assert hash_key_getter(None)(request) == "203.0.113.9"
    assert hash_key_getter(HashOn(client_ip=True))(request) == "203.0.113.9"
    assert hash_key_getter(HashOn(header="X-User"))(request) == "alice"
    assert hash_key_getter(HashOn(cookie="sid"))(request) == "s1"
    assert hash_key_getter(HashOn(header="x-missing"))(request) is None


def test_key_getter_rejects_empty_hash_on() -> None:
    with pytest.raises(ValueError, match="names no key"):
        hash_key_getter(HashOn.model_construct(header=None, cookie=None, client_ip=False))


@pytest.mark.parametrize("kind", KINDS)
def test_header_key_ignores_client_ip(kind: type[HashBalancer]) -> None:
    balancer = kind(make_endpoints(1, 1, 1, 1), HashOn(header="x-user"))
    landed = {
        balancer.pick_at(make_request(client_ip=ip, headers=[("X-User", "bob")]), (), NOW)
        for ip in KEYS[:200]
    }
    assert len(landed) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_cookie_key(kind: type[HashBalancer]) -> None:
    balancer = kind(make_endpoints(1, 1, 1, 1), HashOn(cookie="session"))
    landed = {
        balancer.pick_at(make_request(client_ip=ip, headers=[("Cookie", "session=abc")]), (), NOW)
        for ip in KEYS[:200]
    }
    assert len(landed) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_missing_key_falls_back_to_weighted_random(kind: type[HashBalancer]) -> None:
    balancer = kind(make_endpoints(1, 3), HashOn(header="x-user"), rng=random.Random(31))
    request = make_request()  # no x-user header
    counts = Counter(balancer.pick_at(request, (), NOW) for _ in range(len(KEYS)))
    assert abs(counts[balancer.endpoints[0]] / len(KEYS) - 0.25) <= 0.03


@pytest.mark.parametrize("kind", KINDS)
def test_empty_client_ip_falls_back_to_random(kind: type[HashBalancer]) -> None:
    balancer = kind(make_endpoints(1, 1), rng=random.Random(32))
    request = make_request(client_ip="")
    assert {balancer.pick_at(request, (), NOW) for _ in range(200)} == set(balancer.endpoints)


# ---------------------------------------------------------------------------------- distribution


@pytest.mark.parametrize("kind", KINDS)
def test_same_key_same_endpoint(kind: type[HashBalancer]) -> None:
    first = kind(make_endpoints(1, 1, 1, 1, 1))
    rebuilt = kind(make_endpoints(1, 1, 1, 1, 1))  # another worker builds the same mapping
    for key in KEYS[:500]:
        endpoint = by_ip(first, key)
        assert all(by_ip(first, key) is endpoint for _ in range(3))
        assert by_ip(rebuilt, key).index == endpoint.index


@pytest.mark.parametrize("kind", KINDS)
def test_keys_spread_evenly_over_four(kind: type[HashBalancer]) -> None:
    tolerance = SPREAD_TOLERANCE[kind]
    for share in key_shares(kind(make_endpoints(1, 1, 1, 1))):
        assert abs(share - 0.25) <= tolerance


@pytest.mark.parametrize("kind", KINDS)
def test_weights_1_3_roughly_respected(kind: type[HashBalancer]) -> None:
    first, second = key_shares(kind(make_endpoints(1, 3)))
    assert abs(first - 0.25) <= 0.05
    assert abs(second - 0.75) <= 0.05


def test_maglev_table_entries_follow_weights_exactly() -> None:
    # Each endpoint takes turns in proportion to its weight, so entries match within one turn.
    size = 65537
    equal = Counter(maglev_table(["a:1", "b:1", "c:1", "d:1"], [1, 1, 1, 1], size))
    assert sorted(equal.values()) == [16384, 16384, 16384, 16385]
    weighted = Counter(maglev_table(["a:1", "b:1"], [1, 3], size))
    assert abs(weighted[0] - size / 4) <= 1 and abs(weighted[1] - 3 * size / 4) <= 1


# ------------------------------------------------------------------------------ minimal disruption


def moved_between_survivors(kind: type[HashBalancer]) -> tuple[float, float]:
    """Remove endpoint 0 of 5: (share of keys it held, share of other keys that moved anyway)."""
    five = make_endpoints(1, 1, 1, 1, 1)
    before = kind(five)
    after = kind(reindexed(five[1:]))
    on_removed = moved_anyway = 0
    for key in KEYS:
        old = by_ip(before, key)
        new = by_ip(after, key)
        if old.index == 0:
            on_removed += 1
        elif new.address != old.address:
            moved_anyway += 1
    return on_removed / len(KEYS), moved_anyway / len(KEYS)


def test_ring_removal_moves_only_the_removed_endpoints_keys() -> None:
    on_removed, moved_anyway = moved_between_survivors(RingHashBalancer)
    assert 0.10 <= on_removed <= 0.30
    assert moved_anyway == 0.0


def test_maglev_removal_moves_few_other_keys() -> None:
    on_removed, moved_anyway = moved_between_survivors(MaglevBalancer)
    assert abs(on_removed - 0.20) <= 0.05
    assert moved_anyway <= 0.05


def test_ring_addition_moves_keys_only_to_the_new_endpoint() -> None:
    four = make_endpoints(1, 1, 1, 1)
    before = RingHashBalancer(four)
    after = RingHashBalancer(make_endpoints(1, 1, 1, 1, 1))
    moved_to = set()
    for key in KEYS:
        new = by_ip(after, key).index
        if new != by_ip(before, key).index:
            moved_to.add(new)
    assert moved_to == {4}


# ------------------------------------------------------------------------------------- fallback


def test_ring_fallback_is_where_the_ring_without_it_would_send_the_key() -> None:
    endpoints = make_endpoints(1, 1, 1, 1, 1)
    balancer = RingHashBalancer(endpoints)
    without_first = RingHashBalancer(reindexed(endpoints[1:]))
    keys_on_first = [k for k in KEYS[:3000] if by_ip(balancer, k).index == 0]
    assert keys_on_first
    endpoints[0].healthy = False
    for key in keys_on_first:
        assert by_ip(balancer, key).address == by_ip(without_first, key).address


@pytest.mark.parametrize("kind", KINDS)
def test_fallback_is_deterministic_and_spread(kind: type[HashBalancer]) -> None:
    balancer = kind(make_endpoints(1, 1, 1, 1, 1))
    keys_on_first = [k for k in KEYS[:2000] if by_ip(balancer, k).index == 0]
    balancer.endpoints[0].down_until = NOW + 10.0
    fallbacks = {key: by_ip(balancer, key) for key in keys_on_first}
    assert all(by_ip(balancer, key) is endpoint for key, endpoint in fallbacks.items())
    assert 0 not in {e.index for e in fallbacks.values()}
    # The displaced keys do not all pile onto one neighbour.
    assert len({e.index for e in fallbacks.values()}) >= 3


@pytest.mark.parametrize("kind", KINDS)
def test_exclude_takes_the_same_path_as_unavailability(kind: type[HashBalancer]) -> None:
    excluded_view = kind(make_endpoints(1, 1, 1))
    unhealthy_view = kind(make_endpoints(1, 1, 1))
    unhealthy_view.endpoints[1].healthy = False
    for key in KEYS[:500]:
        retried = by_ip(excluded_view, key, exclude=(excluded_view.endpoints[1],))
        assert retried.index == by_ip(unhealthy_view, key).index != 1


@pytest.mark.parametrize("kind", KINDS)
def test_only_one_candidate_left(kind: type[HashBalancer]) -> None:
    balancer = kind(make_endpoints(1, 1, 1, 1))
    for endpoint in balancer.endpoints[:3]:
        endpoint.healthy = False
    assert {by_ip(balancer, key).index for key in KEYS[:300]} == {3}


# ----------------------------------------------------------------------------------- construction


def test_maglev_build_for_100_endpoints_is_fast() -> None:
    started = time.perf_counter()
    balancer = MaglevBalancer(make_endpoints(*range(1, 101)))
    assert time.perf_counter() - started < 1.0
    assert len(balancer._table) == 65537


def test_maglev_small_prime_table() -> None:
    balancer = MaglevBalancer(make_endpoints(1, 1, 1), table_size=13)
    assert sorted(Counter(e.index for e in balancer._table).values()) == [4, 4, 5]


@pytest.mark.parametrize("size", [65536, 1, 0, 15])
def test_maglev_rejects_non_prime_table(size: int) -> None:
    with pytest.raises(ValueError, match="prime"):
        MaglevBalancer(make_endpoints(1), table_size=size)


def test_maglev_rejects_table_smaller_than_the_pool() -> None:
    with pytest.raises(ValueError, match="smaller than"):
        MaglevBalancer(make_endpoints(1, 1, 1, 1), table_size=3)


def test_is_prime() -> None:
    assert [n for n in range(30) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
    assert is_prime(65537) and not is_prime(65535)


def test_ring_points_scale_with_weight() -> None:
    balancer = RingHashBalancer(make_endpoints(1, 3))
    owned = Counter(owner.index for owner in balancer._owners)
    assert owned == {0: 160, 1: 480}
    assert balancer._points == sorted(balancer._points)


def test_ring_size_is_capped_for_heavy_pools() -> None:
    balancer = RingHashBalancer(make_endpoints(*[10_000] * 20, 1))
    owned = Counter(owner.index for owner in balancer._owners)
    assert len(balancer._points) <= MAX_RING_POINTS + 21
    assert owned[20] == 1  # even a negligible endpoint keeps one point
    assert all(abs(owned[i] - MAX_RING_POINTS / 20) <= 1 for i in range(20))


def test_ring_rejects_zero_points_per_weight() -> None:
    with pytest.raises(ValueError, match="points_per_weight"):
        RingHashBalancer(make_endpoints(1), points_per_weight=0)
