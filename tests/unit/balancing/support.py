"""Helpers shared by the balancing tests: endpoints, requests and pick counting."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from portway.balancing import Balancer, Endpoint
from portway.messages import Request

NOW = 1000.0  # a fixed monotonic time for pick_at


def make_endpoints(*weights: int) -> list[Endpoint]:
    """Endpoints 10.0.0.<i>:8080 with the given weights, indexed in order."""
    return [Endpoint(f"10.0.0.{i}", 8080, weight, i) for i, weight in enumerate(weights)]


def make_request(
    client_ip: str = "192.0.2.1",
    headers: Iterable[tuple[str, str]] = (),
) -> Request:
    raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    return Request("GET", "example.com", "/", headers=raw, client_ip=client_ip)


def count_picks(
    balancer: Balancer,
    picks: int,
    exclude: Collection[Endpoint] = (),
    request: Request | None = None,
) -> list[int]:
    """How many of ``picks`` picks landed on each endpoint, by index (None picks fail the test)."""
    request = request if request is not None else make_request()
    counts = [0] * len(balancer.endpoints)
    for _ in range(picks):
        endpoint = balancer.pick_at(request, exclude, NOW)
        assert endpoint is not None
        counts[endpoint.index] += 1
    return counts


def shares(counts: list[int]) -> list[float]:
    total = sum(counts)
    return [count / total for count in counts]


def names(endpoints: Iterable[Endpoint | None]) -> str:
    """Picks as letters (index 0 -> "a"), to compare sequences at a glance."""
    return "".join("-" if e is None else "abcdefghijklmnopqrstuvwxyz"[e.index] for e in endpoints)
