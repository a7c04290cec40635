"""make_balancer, and what every algorithm owes the data plane: available, non-excluded picks."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from portway.balancing import (
    Balancer,
    LeastRequestBalancer,
    MaglevBalancer,
    RandomBalancer,
    RingHashBalancer,
    RoundRobinBalancer,
    StickyBalancer,
    make_balancer,
)
from portway.balancing.base import Balancer as BaseBalancer
from portway.config.model import ServiceConfig
from tests.unit.balancing.support import NOW, make_endpoints, make_request

ALGORITHMS = ["round_robin", "least_request", "random", "ring_hash", "maglev"]
# Every algorithm, bare and wrapped in sticky sessions.
VARIANTS = [(a, False) for a in ALGORITHMS] + [(a, True) for a in ALGORITHMS]


def service(algorithm: str, sticky: bool = False, **extra: Any) -> ServiceConfig:
    fields: dict[str, Any] = {"instances": [], "algorithm": algorithm, **extra}
    if sticky:
        fields["sticky"] = {}
    return ServiceConfig.model_validate(fields)


def build(algorithm: str, sticky: bool, *weights: int) -> Balancer:
    return make_balancer(service(algorithm, sticky), make_endpoints(*weights), rng=random.Random(7))


def varied_requests(count: int) -> list[Any]:
    """Requests from many client IPs, so hashing balancers visit every endpoint."""
    return [make_request(client_ip=f"198.51.{i // 250}.{i % 250}") for i in range(count)]


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("round_robin", RoundRobinBalancer),
        ("least_request", LeastRequestBalancer),
        ("random", RandomBalancer),
        ("ring_hash", RingHashBalancer),
        ("maglev", MaglevBalancer),
    ],
)
def test_make_balancer_builds_the_configured_algorithm(
    algorithm: str, expected: type[Balancer]
) -> None:
    endpoints = make_endpoints(1, 2)
    balancer = make_balancer(service(algorithm), endpoints)
    assert type(balancer) is expected
    assert balancer.endpoints == tuple(endpoints)


def test_make_balancer_wraps_sticky() -> None:
    balancer = make_balancer(service("least_request", sticky=True), make_endpoints(1, 1))
    assert isinstance(balancer, StickyBalancer)
    assert type(balancer.inner) is LeastRequestBalancer


def test_make_balancer_rejects_unknown_algorithm() -> None:
    bogus = service("round_robin").model_copy(update={"algorithm": "fastest"})
    with pytest.raises(ValueError, match="fastest"):
        make_balancer(bogus, make_endpoints(1))


def test_endpoint_index_must_match_position() -> None:
    endpoints = make_endpoints(1, 1)
    with pytest.raises(ValueError, match="index 1 but is at position 0"):
        RoundRobinBalancer([endpoints[1], endpoints[0]])


def test_balancer_is_abstract() -> None:
    with pytest.raises(TypeError):
        BaseBalancer(make_endpoints(1))  # type: ignore[abstract]


@pytest.mark.parametrize(("algorithm", "sticky"), VARIANTS)
def test_zero_endpoints_pick_none(algorithm: str, sticky: bool) -> None:
    balancer = build(algorithm, sticky)
    request = make_request()
    assert balancer.pick(request) is None
    assert request.response_headers == []


@pytest.mark.parametrize(("algorithm", "sticky"), VARIANTS)
def test_unhealthy_endpoint_is_never_picked(algorithm: str, sticky: bool) -> None:
    balancer = build(algorithm, sticky, 1, 3, 2)
    balancer.endpoints[1].healthy = False
    picked = {balancer.pick_at(r, (), NOW).index for r in varied_requests(600)}  # type: ignore[union-attr]
    assert picked == {0, 2}


@pytest.mark.parametrize(("algorithm", "sticky"), VARIANTS)
def test_backing_off_endpoint_is_skipped_until_its_deadline(algorithm: str, sticky: bool) -> None:
    balancer = build(algorithm, sticky, 1, 1, 1)
    balancer.endpoints[0].down_until = NOW + 5.0
    requests = varied_requests(600)
    during = {balancer.pick_at(r, (), NOW).index for r in requests}  # type: ignore[union-attr]
    after = {balancer.pick_at(r, (), NOW + 5.0).index for r in requests}  # type: ignore[union-attr]
    assert during == {1, 2}
    assert after == {0, 1, 2}


@pytest.mark.parametrize(("algorithm", "sticky"), VARIANTS)
def test_pick_reads_the_monotonic_clock(algorithm: str, sticky: bool) -> None:
    balancer = build(algorithm, sticky, 1, 1)
    balancer.endpoints[0].mark_down(60.0)
    assert {balancer.pick(r).index for r in varied_requests(300)} == {1}  # type: ignore[union-attr]
    balancer.endpoints[0].down_until = time.monotonic() - 1.0
    assert {balancer.pick(r).index for r in varied_requests(300)} == {0, 1}  # type: ignore[union-attr]


@pytest.mark.parametrize(("algorithm", "sticky"), VARIANTS)
def test_all_unavailable_gives_none(algorithm: str, sticky: bool) -> None:
    balancer = build(algorithm, sticky, 1, 2, 3)
    balancer.endpoints[0].healthy = False
    balancer.endpoints[1].down_until = NOW + 1.0
    balancer.endpoints[2].healthy = False
    for request in varied_requests(50):
        assert balancer.pick_at(request, (), NOW) is None
        assert request.response_headers == []


@pytest.mark.parametrize(("algorithm", "sticky"), VARIANTS)
def test_excluded_endpoints_are_not_picked(algorithm: str, sticky: bool) -> None:
    balancer = build(algorithm, sticky, 2, 1, 1, 1)
    exclude = {balancer.endpoints[0], balancer.endpoints[3]}
    picked = {balancer.pick_at(r, exclude, NOW).index for r in varied_requests(600)}  # type: ignore[union-attr]
    assert picked == {1, 2}


@pytest.mark.parametrize(("algorithm", "sticky"), VARIANTS)
def test_excluding_every_available_endpoint_gives_none(algorithm: str, sticky: bool) -> None:
    balancer = build(algorithm, sticky, 1, 1, 1)
    balancer.endpoints[2].healthy = False
    exclude = balancer.endpoints[:2]  # a tuple works as well as a set
    for request in varied_requests(50):
        assert balancer.pick_at(request, exclude, NOW) is None


@pytest.mark.parametrize(("algorithm", "sticky"), VARIANTS)
def test_single_endpoint_is_always_picked(algorithm: str, sticky: bool) -> None:
    balancer = build(algorithm, sticky, 4)
    balancer.endpoints[0].active = 1000
    only = balancer.endpoints[0]
    assert all(balancer.pick_at(r, (), NOW) is only for r in varied_requests(50))
