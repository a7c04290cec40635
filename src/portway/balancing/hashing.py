"""Consistent hashing: the same key (a header, a cookie, the client IP) lands on the same endpoint.

``RingHashBalancer`` is a ketama-style ring: each endpoint owns points proportional to its weight,
a key goes to the first point at or after its hash. ``MaglevBalancer`` is Google's Maglev (Eisenbud
et al., NSDI 2016): a prime-sized lookup table filled by the endpoints' preference permutations,
which spreads keys more evenly at the price of slightly more movement when endpoints change.

Hashes are 64-bit BLAKE2b, stable across processes (Python's ``hash()`` is salted per process). A
request without a key gets a weighted random endpoint. When the hashed endpoint is unavailable or
excluded, the ring walks clockwise and the table probes the following entries: the same key keeps
landing on the same fallback.
"""

from __future__ import annotations

import random
import struct
from bisect import bisect_left
from collections.abc import Callable, Collection, Sequence
from hashlib import blake2b
from heapq import heapreplace
from typing import TYPE_CHECKING

from portway.balancing.base import Balancer
from portway.balancing.endpoint import Endpoint
from portway.balancing.random_choice import RandomBalancer

if TYPE_CHECKING:
    from portway.config.model import HashOn
    from portway.messages import Request

KeyGetter = Callable[["Request"], "str | None"]

# ketama uses 160 points per server; weights multiply that, and very large totals are scaled down.
RING_POINTS_PER_WEIGHT = 160
MAX_RING_POINTS = 1 << 17
# The smallest prime above 2**16, as in the Maglev paper's and Envoy's default.
MAGLEV_TABLE_SIZE = 65537

_FOUR_U64 = struct.Struct(">4Q")
_TWO_U64 = struct.Struct(">2Q")


def hash64(key: str) -> int:
    return int.from_bytes(blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


def hash_key_getter(hash_on: HashOn | None) -> KeyGetter:
    """How to read the hash key from a request; the client IP when ``hash_on`` is None."""
    if hash_on is None or hash_on.client_ip:
        return _client_ip
    if hash_on.header is not None:
        header = hash_on.header.lower()
        return lambda request: request.header(header)
    if hash_on.cookie is not None:
        cookie = hash_on.cookie
        return lambda request: request.cookie(cookie)
    raise ValueError("hash_on names no key: set one of header, cookie or client_ip")


def _client_ip(request: Request) -> str | None:
    return request.client_ip


class _HashingBalancer(Balancer):
    """What both hashing balancers share: the key getter and the random pick for keyless ones."""

    __slots__ = ("_fallback", "_key_of")

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        hash_on: HashOn | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(endpoints)
        self._key_of = hash_key_getter(hash_on)
        self._fallback = RandomBalancer(self.endpoints, rng=rng)

    def _owner_from(
        self,
        owners: Sequence[Endpoint],
        position: int,
        exclude: Collection[Endpoint],
        now: float,
    ) -> Endpoint | None:
        """The owner at ``position`` if it may be picked, else the next one that may, walking on
        (and wrapping) so that the same key always falls back to the same endpoint."""
        owner = owners[position]
        if owner.healthy and owner.down_until <= now and (not exclude or owner not in exclude):
            return owner
        if not self.has_candidate(exclude, now):
            return None
        size = len(owners)
        while True:  # ends: a candidate owns at least one position
            position += 1
            if position == size:
                position = 0
            owner = owners[position]
            if owner.healthy and owner.down_until <= now and (not exclude or owner not in exclude):
                return owner


# ------------------------------------------------------------------------------------------- ring


def ring_points(address: str, count: int) -> list[int]:
    """``count`` points on the 64-bit ring for ``address``, four per digest as in ketama."""
    points: list[int] = []
    block = 0
    while len(points) < count:
        digest = blake2b(f"{address}#{block}".encode(), digest_size=32).digest()
        points.extend(_FOUR_U64.unpack(digest)[: count - len(points)])
        block += 1
    return points


class RingHashBalancer(_HashingBalancer):
    __slots__ = ("_owners", "_points")

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        hash_on: HashOn | None = None,
        *,
        rng: random.Random | None = None,
        points_per_weight: int = RING_POINTS_PER_WEIGHT,
    ) -> None:
        super().__init__(endpoints, hash_on, rng=rng)
        if points_per_weight < 1:
            raise ValueError("points_per_weight must be at least 1")
        total = sum(e.weight for e in self.endpoints) * points_per_weight
        # Below the cap an endpoint's points depend on its own address and weight only, so adding or
        # removing another endpoint moves no key between the endpoints that stay.
        scale = min(1.0, MAX_RING_POINTS / total) if total else 1.0
        ring: list[tuple[int, int]] = []
        for endpoint in self.endpoints:
            count = max(1, round(endpoint.weight * points_per_weight * scale))
            ring.extend((point, endpoint.index) for point in ring_points(endpoint.address, count))
        ring.sort()
        self._points = [point for point, _ in ring]
        self._owners = [self.endpoints[index] for _, index in ring]

    def pick_at(
        self, request: Request, exclude: Collection[Endpoint], now: float
    ) -> Endpoint | None:
        key = self._key_of(request)
        if not key:
            return self._fallback.pick_at(request, exclude, now)
        points = self._points
        if not points:
            return None
        position = bisect_left(points, hash64(key))
        if position == len(points):
            position = 0
        return self._owner_from(self._owners, position, exclude, now)


# ----------------------------------------------------------------------------------------- maglev


def is_prime(number: int) -> bool:
    if number < 2:
        return False
    divisor = 2
    while divisor * divisor <= number:
        if number % divisor == 0:
            return False
        divisor += 1
    return True


def maglev_table(addresses: Sequence[str], weights: Sequence[int], size: int) -> list[int]:
    """The Maglev lookup table: ``size`` entries, each the index of the endpoint owning it.

    Each endpoint walks its own permutation of the slots (``offset + j * skip`` mod ``size``; every
    skip is coprime with a prime size) and endpoints take turns claiming their next free slot.
    Weights set how often an endpoint gets a turn, as in Envoy: the heaviest one takes a turn every
    round, one of weight w its k-th turn in round ceil(k * max_weight / w).
    """
    if not addresses:
        return []
    positions = []
    skips = []
    for address in addresses:
        first, second = _TWO_U64.unpack(
            blake2b(address.encode(), digest_size=16, person=b"portway-maglev").digest()
        )
        positions.append(first % size)
        skips.append(second % (size - 1) + 1)
    heaviest = max(weights)
    turns = [0] * len(addresses)
    # (round of the next turn, index): the index breaks ties, so turns within a round go in order.
    heap = [(0, index) for index in range(len(addresses))]
    table = [-1] * size
    for _ in range(size):
        index = heap[0][1]
        slot = positions[index]
        skip = skips[index]
        while table[slot] >= 0:
            slot += skip
            if slot >= size:
                slot -= size
        table[slot] = index
        positions[index] = slot
        turn = turns[index] + 1
        turns[index] = turn
        heapreplace(heap, (-(-turn * heaviest // weights[index]), index))
    return table


class MaglevBalancer(_HashingBalancer):
    __slots__ = ("_table",)

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        hash_on: HashOn | None = None,
        *,
        rng: random.Random | None = None,
        table_size: int = MAGLEV_TABLE_SIZE,
    ) -> None:
        super().__init__(endpoints, hash_on, rng=rng)
        if not is_prime(table_size):
            raise ValueError(f"the Maglev table size must be a prime, got {table_size}")
        if table_size < len(self.endpoints):
            # Every endpoint must own an entry, or the fallback probe could not reach it.
            raise ValueError(
                f"the Maglev table size {table_size} is smaller than the "
                f"{len(self.endpoints)} endpoints"
            )
        order = maglev_table(
            [e.address for e in self.endpoints], [e.weight for e in self.endpoints], table_size
        )
        self._table = [self.endpoints[index] for index in order]

    def pick_at(
        self, request: Request, exclude: Collection[Endpoint], now: float
    ) -> Endpoint | None:
        key = self._key_of(request)
        if not key:
            return self._fallback.pick_at(request, exclude, now)
        table = self._table
        if not table:
            return None
        return self._owner_from(table, hash64(key) % len(table), exclude, now)
