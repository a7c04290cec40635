"""Sliding-window counting of requests per key, in one worker's memory.

The window is approximated the way Cloudflare and many gateways do: fixed windows aligned to the
wall clock (so every worker and replica agrees where they start), and the count of the window
before the current one weighted by how much of it still overlaps the sliding window:

    estimate = previous * (1 - elapsed / per) + current

A request is admitted when ``estimate + 1 <= limit``; refused requests are not counted, so a
client that keeps retrying too fast is not locked out forever. The error against a true sliding
log is small when traffic is even and never lets a steady sender past the limit.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple


class Verdict(NamedTuple):
    allowed: bool
    remaining: int  # requests still admitted now (0 when refused)
    reset: int  # seconds until the quota is whole again (RateLimit ``t``)
    retry_after: int  # when refused: seconds until one request would be admitted


class LocalWindow:
    """Counts per key for one rate limit; the least recently added keys go past ``max_keys``."""

    store = "local"

    def __init__(self, limit: int, per: float, max_keys: int) -> None:
        self.limit = limit
        self.per = per
        self.max_keys = max_keys
        # key -> [window index, previous window's count, current window's count]
        self.counts: dict[str, list[int]] = {}

    def hit(self, key: str, now: float) -> Verdict:
        per = self.per
        window = int(now // per)
        entry = self.counts.get(key)
        if entry is None:
            if len(self.counts) >= self.max_keys:
                self._make_room(window)
            entry = self.counts[key] = self.new_entry(window)
        elif entry[0] != window:
            entry[1] = entry[2] if entry[0] == window - 1 else 0
            entry[2] = 0
            entry[0] = window
        return self.decide(entry, self.shared(key, entry), now, window)

    def new_entry(self, window: int) -> list[int]:
        """A new key's counts: window index, previous and current window's count. A subclass may
        append fields of its own, so that they live and are forgotten with the key's counts."""
        return [window, 0, 0]

    def shared(self, key: str, entry: list[int]) -> tuple[int, int]:
        """Counts other workers and replicas added (previous, current window), for a request
        about to be decided: none here."""
        return self.others(entry)

    def others(self, entry: list[int]) -> tuple[int, int]:
        """What is known of other workers' and replicas' counts for the entry's windows."""
        return 0, 0

    def decide(self, entry: list[int], others: tuple[int, int], now: float, window: int) -> Verdict:
        per = self.per
        limit = self.limit
        elapsed = now - window * per
        weight = 1.0 - elapsed / per
        previous = entry[1] + others[0]
        current = entry[2] + others[1]
        estimate = previous * weight + current
        window_end = math.ceil((window + 1) * per - now)
        if estimate + 1 > limit:
            return Verdict(False, 0, window_end, self._retry_after(previous, current, elapsed))
        entry[2] += 1
        remaining = int(limit - estimate - 1)
        return Verdict(True, remaining, window_end, 0)

    def _retry_after(self, previous: int, current: int, elapsed: float) -> int:
        """Seconds until ``previous * weight + current + 1 <= limit`` as the weight falls."""
        per = self.per
        room = self.limit - current - 1
        if room >= 0 and previous > 0:
            # weight(t) = 1 - t / per reaches room / previous at t = per * (1 - room / previous)
            wait = per * (1.0 - room / previous) - elapsed
        else:
            # Not this window: in the next one ``current`` becomes the weighted part.
            wait = per - elapsed
            if current >= self.limit:
                wait += per * (1.0 - (self.limit - 1) / current)
        return max(1, math.ceil(wait))

    def _make_room(self, window: int) -> None:
        """Forget keys idle for two windows; if that is not enough, the oldest added."""
        counts = self.counts
        stale = [k for k, e in counts.items() if e[0] < window - 1]
        for key in stale:
            del counts[key]
        excess = len(counts) - self.max_keys + 1
        if excess > 0:
            for key in list(counts)[:excess]:
                del counts[key]

    def state(self, now: float, top: int = 20) -> dict[str, Any]:
        """Keys tracked and the busiest ones, for the admin API: the estimate a request would be
        decided on (other workers' and replicas' counts included when they are shared)."""
        per = self.per
        window = int(now // per)
        weight = 1.0 - (now - window * per) / per
        usage: list[tuple[float, str]] = []
        for key, entry in self.counts.items():
            index = entry[0]
            other_previous, other_current = self.others(entry)
            previous, current = entry[1] + other_previous, entry[2] + other_current
            if index == window:
                estimate = previous * weight + current
            elif index == window - 1:
                estimate = current * weight
            else:
                continue
            usage.append((estimate, key))
        usage.sort(reverse=True)
        return {
            "store": self.store,
            "limit": self.limit,
            "window_seconds": per,
            "keys": len(usage),
            "top": [
                {"key": key, "used": round(used, 2), "remaining": max(0, int(self.limit - used))}
                for used, key in usage[:top]
            ],
        }

    def close(self) -> None:
        """Nothing runs in the background of a local window."""
