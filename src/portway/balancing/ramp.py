"""Slow start and panic: how much traffic a recovering instance gets, and when health is ignored.

Slow start follows Envoy's (linear, aggression 1): during the window an instance takes
``max(10%, elapsed / window)`` of its normal share; the 10% floor is Envoy's default
``min_weight_percent``, so a recovering instance is never starved. Rather than rescale weights in
every algorithm, the data plane re-picks when ``accept_during_ramp`` says no, which gives the same
expected share.

Panic follows Envoy's panic threshold: when the share of available instances drops below it, the
gateway disregards health and balances across all instances, so that the failures of a few do not
push all traffic onto the rest and cascade.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from portway.balancing.endpoint import Endpoint

MIN_RAMP_FRACTION = 0.1  # Envoy's default min_weight_percent (10%)


def ramp_fraction(endpoint: Endpoint, now: float, slow_start: float) -> float:
    """The share (0.1 to 1) of its normal traffic ``endpoint`` takes at monotonic time ``now``.

    1 when slow start is off (``slow_start`` 0), the endpoint is not ramping (``ramp_start`` 0) or
    the window has passed; in that last case ``ramp_start`` is cleared so later calls are cheap.
    """
    if not slow_start > 0:  # also catches NaN
        if slow_start == 0:
            return 1.0
        raise ValueError(f"slow_start must be a number of seconds >= 0, got {slow_start}")
    start = endpoint.ramp_start
    if start == 0:
        return 1.0
    elapsed = now - start
    if elapsed >= slow_start:
        endpoint.ramp_start = 0.0
        return 1.0
    # A ramp that starts in the future (or a clock behind it) gets the floor, not a negative share.
    return max(MIN_RAMP_FRACTION, elapsed / slow_start)


def accept_during_ramp(
    endpoint: Endpoint, now: float, slow_start: float, rng: random.Random
) -> bool:
    """Whether a pick of ``endpoint`` stands: True with probability ``ramp_fraction``.

    The caller re-picks on False, so an endpoint at 30% of its ramp takes about 30% of its share.
    """
    fraction = ramp_fraction(endpoint, now, slow_start)
    return fraction >= 1.0 or rng.random() < fraction


def available_percent(endpoints: Sequence[Endpoint], now: float) -> float:
    """The share (0 to 100) of ``endpoints`` available at ``now``; 0 when there are none."""
    if not endpoints:
        return 0.0
    available = sum(1 for endpoint in endpoints if endpoint.available(now))
    return 100.0 * available / len(endpoints)


def in_panic(endpoints: Sequence[Endpoint], now: float, threshold: float) -> bool:
    """Whether fewer than ``threshold`` percent of ``endpoints`` are available (0: never)."""
    if not 0 <= threshold <= 100:
        raise ValueError(f"panic threshold must be from 0 to 100, got {threshold}")
    return threshold > 0 and bool(endpoints) and available_percent(endpoints, now) < threshold
