"""The health board: check results shared by one prober process with every worker.

An anonymous shared ``mmap`` that the supervisor creates before it forks, so the prober and all the
workers inherit the same pages: no file, no socket, no copying, and it disappears with the last
process. It holds a header and one byte per instance (a ``HealthState``):

=======  =====  ==============================================================================
offset   size   field
=======  =====  ==============================================================================
0        4      magic ``PWHB``
4        4      capacity (slots), little-endian
8        8      sequence: odd while a new layout is being written, +2 on every change
16       16     fingerprint of the layout the slots follow (``Layout.fingerprint``)
32       4      slots in use
64       cap.   one state byte per slot
=======  =====  ==============================================================================

There is one writer (the prober; the supervisor never runs two). A reader copies the header and the
slots and keeps the copy only if the sequence was even and unchanged around it, so it never mixes
two layouts; single-byte updates need no more than that, since a byte is written whole.
"""

from __future__ import annotations

import logging
import mmap
import struct
import time
from collections.abc import Mapping

from portway.health.state import Change, HasEndpoints, HealthState, Layout, set_health

log = logging.getLogger("portway.health")

MAX_SLOTS = 65_536  # instances across all services; beyond this, checks are not shared
HEADER_SIZE = 64
_MAGIC = b"PWHB"
_HEADER = struct.Struct("<4sIQ16sI")
_SEQUENCE = struct.Struct("<Q")
_SEQUENCE_AT = 8
_READ_ATTEMPTS = 3


class Board:
    """The shared pages; create before forking. Writer methods for the prober, ``reader()`` for workers."""

    def __init__(self, capacity: int = MAX_SLOTS) -> None:
        if not 1 <= capacity <= MAX_SLOTS:
            raise ValueError(f"capacity must be from 1 to {MAX_SLOTS}, got {capacity}")
        self.capacity = capacity
        # fileno -1: anonymous memory, MAP_SHARED by default, so forked children share the pages.
        self._map = mmap.mmap(-1, HEADER_SIZE + capacity)
        _HEADER.pack_into(self._map, 0, _MAGIC, capacity, 0, bytes(16), 0)

    def close(self) -> None:
        self._map.close()

    @property
    def sequence(self) -> int:
        value: int = _SEQUENCE.unpack_from(self._map, _SEQUENCE_AT)[0]
        return value

    def _set_sequence(self, value: int) -> None:
        _SEQUENCE.pack_into(self._map, _SEQUENCE_AT, value)

    # -- the writer (the prober) ------------------------------------------------------------------

    def lay_out(self, layout: Layout, states: Mapping[int, HealthState]) -> int:
        """Switch to ``layout`` with ``states`` (slot -> state; others unknown).

        Returns how many of the layout's slots do not fit the board (0 normally): those instances
        stay unknown, which counts as healthy.
        """
        used = min(layout.size, self.capacity)
        sequence = self.sequence
        self._set_sequence(sequence | 1)  # odd: readers keep what they had
        slots = bytearray(max(used, self._used()))
        for slot, state in states.items():
            if 0 <= slot < used:
                slots[slot] = state
        self._map[HEADER_SIZE : HEADER_SIZE + len(slots)] = bytes(slots)
        _HEADER.pack_into(
            self._map, 0, _MAGIC, self.capacity, sequence | 1, layout.fingerprint, used
        )
        self._set_sequence((sequence | 1) + 1)
        return layout.size - used

    def write(self, slot: int, state: HealthState) -> bool:
        """Publish one instance's state; False when ``slot`` is beyond what the board holds."""
        if not 0 <= slot < self._used():
            return False
        self._map[HEADER_SIZE + slot] = state
        self._set_sequence(self.sequence + 2)
        return True

    def recall(self, layout: Layout) -> dict[int, HealthState]:
        """The states on the board (slot -> state) if they follow ``layout``, else nothing.

        A prober that restarts picks up where its predecessor left off: an unhealthy instance does
        not become healthy just because the process checking it was replaced.
        """
        read = self.read()
        if read is None or read[0] != layout.fingerprint:
            return {}
        return {
            slot: HealthState(value)
            for slot, value in enumerate(read[1])
            if value != HealthState.UNKNOWN and value in _VALID
        }

    def _used(self) -> int:
        used: int = _HEADER.unpack_from(self._map, 0)[4]
        return used

    # -- readers (the workers) --------------------------------------------------------------------

    def read(self) -> tuple[bytes, bytes, int] | None:
        """(fingerprint, slots, sequence) as one consistent copy; None while a layout is written."""
        for _ in range(_READ_ATTEMPTS):
            before = self.sequence
            if before & 1:
                continue
            _magic, _capacity, _seq, fingerprint, used = _HEADER.unpack_from(self._map, 0)
            slots = self._map[HEADER_SIZE : HEADER_SIZE + min(used, self.capacity)]
            if self.sequence == before:
                return fingerprint, slots, before
        return None

    def reader(self) -> BoardReader:
        return BoardReader(self)


_VALID = frozenset(int(state) for state in HealthState)


class BoardReader:
    """A worker's view of the board: applies changed slots to its snapshot's endpoints."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self._sequence = -1
        self._services: Mapping[str, HasEndpoints] | None = None
        self._layout: Layout | None = None
        self._applied: bytes | None = None  # the slots last applied to ``_services``

    def apply(self, services: Mapping[str, HasEndpoints]) -> list[Change]:
        """Set ``endpoint.healthy`` wherever the board changed; the changes made.

        Nothing is applied while the board follows another layout than ``services`` (a reload
        that one process has made and the other not yet): stale slots would name other instances.
        Cheap when nothing changed: one 8-byte read.
        """
        same_services = services is self._services
        if same_services and self.board.sequence == self._sequence:
            return []
        read = self.board.read()
        if read is None:
            return []  # a layout is being written; the next call sees it
        fingerprint, slots, sequence = read
        if not same_services or self._layout is None:
            self._services = services
            self._layout = Layout.from_services(services)
            self._applied = None  # new endpoint objects: every slot counts as changed
        self._sequence = sequence
        if fingerprint != self._layout.fingerprint:
            self._applied = None
            return []
        previous = self._applied
        self._applied = slots
        return _apply_slots(services, self._layout, slots, previous)


def _apply_slots(
    services: Mapping[str, HasEndpoints], layout: Layout, slots: bytes, previous: bytes | None
) -> list[Change]:
    changes: list[Change] = []
    now = time.monotonic()  # the clock of Endpoint.ramp_start
    for name, (first, count) in layout.spans.items():
        service = services[name]
        for index in range(count):
            slot = first + index
            value = slots[slot] if slot < len(slots) else HealthState.UNKNOWN
            if previous is not None and slot < len(previous) and previous[slot] == value:
                continue
            endpoint = service.endpoints[index]
            healthy = value != HealthState.UNHEALTHY
            if set_health(endpoint, healthy, service.slow_start, now):
                changes.append(Change(name, endpoint.address, healthy))
    return changes
