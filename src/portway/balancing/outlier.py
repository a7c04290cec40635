"""Passive health: eject instances that fail the requests one worker sends them (Envoy's model).

The data plane reports each try's outcome: ``success`` for a response below 500, ``failure`` with
a kind otherwise. The kinds feed the rules differently, since each rule asks its own question:

* ``"5xx"``, ``"reset"`` (closed before a response) and ``"timeout"`` (no response head within
  the read or try timeout): an answer of 500 or more, or the gateway-side equivalents a client
  would have seen as 502 and 504. Count toward ``consecutive_5xx`` and the failure rate (Envoy's
  default, where consecutive_5xx includes locally originated errors unless they are split out),
  so an instance that hangs or resets is ejected like one answering 503. They also end a run of
  connect failures: the instance accepted a connection.
* ``"connect"``: the connection was refused or not made within ``connect_timeout``. Counts toward
  ``consecutive_connect_failures`` and the failure rate; a run of 5xx is left as it is, since no
  answer arrived to extend or break it.

An ejection lasts ``base_ejection_time`` times the endpoint's ejection count, capped at
``max_ejection_time`` (Envoy: "equal to the base_ejection_time value multiplied by the number of
times the host has been ejected in a row"). The count decays as Envoy's does: every
``DECAY_INTERVAL`` seconds an endpoint spends back in service takes one off (Envoy decrements the
multiplier at each ``interval`` sweep that finds the host healthy; 10 s is its default interval).
The decay is measured in time, not in ``refresh`` calls, so how often the data plane refreshes does
not change it.

Per-endpoint state lives here in lists indexed by ``endpoint.index``; the endpoint carries only
what the balancers read (``down_until``, ``ramp_start``) and ``ejections``. Events for an endpoint
that is ejected are ignored: they describe it before the ejection, and it comes back with clean
counters.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Literal, get_args

from portway.balancing.endpoint import Endpoint, check_positions, check_slow_start
from portway.config.resilience import FailureRateConfig, OutlierDetectionConfig

FailureKind = Literal["5xx", "connect", "reset", "timeout"]
_KINDS = frozenset(get_args(FailureKind))

WINDOW_BUCKETS = 10  # failure-rate window resolution: an event is forgotten 0.9-1.0 window later
DECAY_INTERVAL = 10.0  # seconds back in service that take one ejection off (Envoy's interval)


def max_ejected(endpoints: int, percent: int) -> int:
    """How many of ``endpoints`` may be ejected at once: at least one unless ``percent`` is 0.

    Envoy always allows one ejection so a single bad instance of a small service can go; unlike
    Envoy (which checks the share *before* ejecting and so may overshoot), the cap is a floor.
    """
    if percent == 0:
        return 0
    return max(1, endpoints * percent // 100)


class _RateWindow:
    """Requests and failures of one endpoint over the last ``window`` seconds, in buckets.

    Each event costs O(1): the bucket of ``now`` is found by its epoch (``now // width``) and the
    buckets skipped since the last event are subtracted from the running sums and cleared (at most
    ``WINDOW_BUCKETS`` of them).
    """

    __slots__ = ("_epoch", "_failed", "_total", "_width", "failed", "total")

    def __init__(self, window: float) -> None:
        self._width = window / WINDOW_BUCKETS
        self._total = [0] * WINDOW_BUCKETS
        self._failed = [0] * WINDOW_BUCKETS
        self._epoch = 0
        self.total = 0
        self.failed = 0

    def add(self, failed: bool, now: float) -> None:
        epoch = int(now // self._width)
        if epoch > self._epoch:
            if epoch - self._epoch >= WINDOW_BUCKETS:
                self.clear()
            else:
                for skipped in range(self._epoch + 1, epoch + 1):
                    slot = skipped % WINDOW_BUCKETS
                    self.total -= self._total[slot]
                    self.failed -= self._failed[slot]
                    self._total[slot] = 0
                    self._failed[slot] = 0
            self._epoch = epoch
        # An epoch before the current one (a clock that stepped back) lands in the current bucket.
        slot = self._epoch % WINDOW_BUCKETS
        self._total[slot] += 1
        self.total += 1
        if failed:
            self._failed[slot] += 1
            self.failed += 1

    def clear(self) -> None:
        for slot in range(WINDOW_BUCKETS):
            self._total[slot] = 0
            self._failed[slot] = 0
        self.total = 0
        self.failed = 0


class OutlierDetector:
    """Ejects endpoints of one service that keep failing; one per service per worker.

    ``clock`` gives the monotonic time of ``success`` and ``failure`` (tests pass a fake one).
    With ``slow_start`` > 0 an endpoint coming back from an ejection starts a ramp
    (``endpoint.ramp_start``, read by ``ramp.ramp_fraction``).
    """

    __slots__ = (
        "_back_since",
        "_clock",
        "_connect",
        "_ejected_until",
        "_fivexx",
        "_max_ejected",
        "_rate",
        "_reason",
        "_windows",
        "config",
        "enabled",
        "endpoints",
        "on_eject",
        "slow_start",
    )

    def __init__(
        self,
        config: OutlierDetectionConfig,
        endpoints: Sequence[Endpoint],
        *,
        slow_start: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_positions(endpoints)
        check_slow_start(slow_start)
        rate = config.failure_rate
        if rate is not None and not (math.isfinite(rate.window) and rate.window > 0):
            raise ValueError(f"failure_rate.window must be greater than 0, got {rate.window}")
        self.config = config
        self.enabled = config.enabled  # read per response: a plain attribute, not the model's
        self.endpoints: tuple[Endpoint, ...] = tuple(endpoints)
        self.slow_start = slow_start
        self._clock = clock
        self._rate: FailureRateConfig | None = rate
        count = len(self.endpoints)
        self._max_ejected = max_ejected(count, config.max_ejection_percent)
        self._fivexx = [0] * count
        self._connect = [0] * count
        self._ejected_until = [0.0] * count  # 0: not ejected by this detector
        # When the endpoint was last known back in service: the decay of `ejections` counts
        # from here, so the first decrement comes DECAY_INTERVAL after the ejection ended.
        now = clock()
        self._back_since = [now] * count
        self._reason = [""] * count
        self._windows = [_RateWindow(rate.window) for _ in range(count)] if rate else []
        # Told of each ejection as it starts. ``endpoint.ejections`` decays and this detector is
        # replaced when its service's config changes, so neither can tell how many ejections
        # happened: whoever counts them (the worker's statistics) keeps its own total.
        self.on_eject: Callable[[Endpoint], None] | None = None

    # ------------------------------------------------------------------------------- events

    def success(self, endpoint: Endpoint) -> None:
        """A response below 500 arrived from ``endpoint``: its consecutive counters restart."""
        if not self.enabled:
            return
        index = self._index_of(endpoint)
        if not self._windows and not self._fivexx[index] and not self._connect[index]:
            return  # the common case, once per response: nothing to reset, no clock read
        now = self._clock()
        if self._ejected_until[index] > now:
            return
        self._fivexx[index] = 0
        self._connect[index] = 0
        if self._windows:
            self._windows[index].add(False, now)

    def failure(self, endpoint: Endpoint, kind: FailureKind) -> bool:
        """Count a failed try of ``kind`` on ``endpoint``; True when it ejected the endpoint."""
        if kind not in _KINDS:
            raise ValueError(f"unknown failure kind {kind!r}; expected one of {sorted(_KINDS)}")
        if not self.enabled:
            return False
        index = self._index_of(endpoint)
        now = self._clock()
        if self._ejected_until[index] > now:
            return False
        config = self.config
        reason = ""
        if kind == "connect":
            self._connect[index] += 1
            threshold = config.consecutive_connect_failures
            if 0 < threshold <= self._connect[index]:
                reason = f"{self._connect[index]} consecutive connect failures"
        else:
            self._fivexx[index] += 1
            self._connect[index] = 0
            if 0 < config.consecutive_5xx <= self._fivexx[index]:
                reason = f"{self._fivexx[index]} consecutive 5xx, resets or timeouts"
        if self._windows:
            window = self._windows[index]
            window.add(True, now)
            rate = self._rate
            assert rate is not None  # windows exist only with a failure-rate rule
            if (
                not reason
                and window.total >= rate.minimum_requests
                and window.failed / window.total >= rate.threshold
            ):
                reason = f"{window.failed} of {window.total} requests failed"
        if not reason or self.ejected_count(now) >= self._max_ejected:
            # Over the cap the counters keep their values: the endpoint is ejected on its next
            # failure once another one has come back.
            return False
        self._eject(index, now, reason)
        return True

    def _eject(self, index: int, now: float, reason: str) -> None:
        endpoint = self.endpoints[index]
        config = self.config
        endpoint.ejections += 1
        duration = min(config.base_ejection_time * endpoint.ejections, config.max_ejection_time)
        until = now + duration
        self._ejected_until[index] = until
        # A longer back-off already on the endpoint (set elsewhere) is kept.
        endpoint.down_until = max(endpoint.down_until, until)
        self._back_since[index] = until
        if self.slow_start > 0:
            # The ramp starts the moment the ejection ends, not at the next refresh: until then
            # ramp_fraction holds a future start at its floor.
            endpoint.ramp_start = until
        self._reason[index] = reason
        self._fivexx[index] = 0
        self._connect[index] = 0
        if self._windows:
            self._windows[index].clear()
        if self.on_eject is not None:
            self.on_eject(endpoint)

    # ---------------------------------------------------------------------------- periodic

    def refresh(self, now: float | None = None) -> None:
        """Bring back endpoints whose ejection ended and decay ejection counts; about every second.

        An endpoint's ``down_until`` already lets it take traffic once the ejection ends; this
        starts its slow-start ramp and frees its place under the ejection cap's bookkeeping.
        """
        if not self.enabled:
            return
        now = self._clock() if now is None else now
        for index, endpoint in enumerate(self.endpoints):
            until = self._ejected_until[index]
            if until > now:
                continue
            if until:
                self._ejected_until[index] = 0.0
            if endpoint.ejections > 0:
                steps = int((now - self._back_since[index]) // DECAY_INTERVAL)
                if steps > 0:
                    endpoint.ejections = max(0, endpoint.ejections - steps)
                    self._back_since[index] += steps * DECAY_INTERVAL

    # ----------------------------------------------------------------------------- reading

    def is_ejected(self, endpoint: Endpoint, now: float | None = None) -> bool:
        """Whether this detector holds ``endpoint`` out of service at ``now``."""
        now = self._clock() if now is None else now
        return self._ejected_until[self._index_of(endpoint)] > now

    def ejected_count(self, now: float | None = None) -> int:
        """How many endpoints this detector holds out of service at ``now``."""
        if not self.enabled:
            return 0
        now = self._clock() if now is None else now
        return sum(1 for until in self._ejected_until if until > now)

    def describe(self, endpoint: Endpoint) -> str:
        """The endpoint's outlier state for logs, e.g. ``ejected 2 times, back in 3.2s: ...``."""
        index = self._index_of(endpoint)
        if not self.enabled:
            return "outlier detection off"
        now = self._clock()
        times = _times(endpoint.ejections)
        until = self._ejected_until[index]
        if until > now:
            return f"ejected {times}, back in {until - now:.1f}s: {self._reason[index]}"
        if endpoint.ejections:
            return f"not ejected (ejected {times} recently)"
        return "not ejected"

    def _index_of(self, endpoint: Endpoint) -> int:
        index = endpoint.index
        if index >= len(self.endpoints) or self.endpoints[index] is not endpoint:
            raise ValueError(f"endpoint {endpoint.address} is not one of this detector's")
        return index

    def __repr__(self) -> str:
        return f"<OutlierDetector of {len(self.endpoints)} endpoints, at most {self._max_ejected} ejected>"


def _times(count: int) -> str:
    return "1 time" if count == 1 else f"{count} times"
