"""Where the prober's results go: the shared board (workers apply them) or endpoints directly.

With ``portway run`` a single prober process writes the ``Board`` and every worker reads it, so
each instance is checked once however many workers there are. A gateway running alone in one
process (tests, the demo) has its prober set its own endpoints, with no board in between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from portway.health.board import Board
from portway.health.state import Change, HasEndpoints, HealthState, Layout, set_health

log = logging.getLogger("portway.health")

# (service name, instance index) -> state
States = Mapping[tuple[str, int], HealthState]


class HealthSink(Protocol):
    def reset(self, layout: Layout, states: States) -> None:
        """A new layout (start, reload): every instance's state, unknown where absent."""

    def publish(self, service: str, index: int, address: str, state: HealthState) -> None:
        """One instance's state changed."""

    def recall(self, layout: Layout) -> dict[tuple[str, int], HealthState]:
        """States a previous prober left for ``layout`` (a restarted prober resumes from them)."""


class BoardSink:
    """Publishes to the shared board; the prober process's sink."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self.layout: Layout | None = None

    def reset(self, layout: Layout, states: States) -> None:
        self.layout = layout
        slots: dict[int, HealthState] = {}
        for (service, index), state in states.items():
            slot = layout.slot(service, index)
            if slot is not None:
                slots[slot] = state
        beyond = self.board.lay_out(layout, slots)
        if beyond:
            log.error(
                "the health board holds %d instances and the config has %d: the results of the "
                "last %d are not shared with the workers, which treat them as healthy",
                self.board.capacity,
                layout.size,
                beyond,
            )

    def publish(self, service: str, index: int, address: str, state: HealthState) -> None:
        slot = self.layout.slot(service, index) if self.layout is not None else None
        if slot is not None:
            self.board.write(slot, state)

    def recall(self, layout: Layout) -> dict[tuple[str, int], HealthState]:
        by_slot = self.board.recall(layout)
        return {
            (name, index): by_slot[first + index]
            for name, (first, count) in layout.spans.items()
            for index in range(count)
            if first + index in by_slot
        }


class EndpointSink:
    """Sets ``endpoint.healthy`` in this process, on whatever services ``services()`` returns now.

    ``services`` is read at every call so a gateway's reload (a new snapshot with new ``Service``
    objects for changed services) is followed; an instance is matched by index and address, so a
    result never lands on another instance.
    """

    def __init__(self, services: Callable[[], Mapping[str, HasEndpoints]]) -> None:
        self.services = services
        self.changes: list[Change] = []  # the last call's, for logs and tests

    def reset(self, layout: Layout, states: States) -> None:
        self.changes = []
        now = time.monotonic()
        services = self.services()
        for name, addresses in layout.services:
            for index, address in enumerate(addresses):
                state = states.get((name, index), HealthState.UNKNOWN)
                self._set(services, name, index, address, state, now)

    def publish(self, service: str, index: int, address: str, state: HealthState) -> None:
        self.changes = []
        self._set(self.services(), service, index, address, state, time.monotonic())

    def recall(self, layout: Layout) -> dict[tuple[str, int], HealthState]:
        return {}  # nothing outlives the process

    def _set(
        self,
        services: Mapping[str, HasEndpoints],
        name: str,
        index: int,
        address: str,
        state: HealthState,
        now: float,
    ) -> None:
        service = services.get(name)
        if service is None or index >= len(service.endpoints):
            return
        endpoint = service.endpoints[index]
        if endpoint.address != address:
            return
        healthy = state != HealthState.UNHEALTHY
        if set_health(endpoint, healthy, service.slow_start, now):
            self.changes.append(Change(name, address, healthy))
