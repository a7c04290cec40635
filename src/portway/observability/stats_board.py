"""The stats board: each worker's statistics, published to the admin process through shared memory.

An anonymous shared ``mmap`` created by the supervisor before it forks (as the health ``Board`` is),
so every worker and the admin process share its pages: no file, no socket, gone with the last
process. It is cut into fixed slots, one per worker plus one for the supervisor (its reload
counters), each holding one JSON document:

=======  ======  =============================================================================
offset   size    field (within a slot)
=======  ======  =============================================================================
0        8       sequence: 0 before the first publish, odd while a document is written, +2 each
8        4       length of the document in bytes
16       rest    the document, UTF-8 JSON
=======  ======  =============================================================================

Slots are ``SLOT_SIZE`` (4 MiB) by default: a worker's snapshot is a few kilobytes per route, so
this holds tens of thousands of label combinations. The memory is reserved, not used: only pages
written are ever resident. A document that does not fit is logged and skipped (the slot keeps the
previous one); it never stops the worker.

Each slot has exactly one writer (its worker, about once a second). A reader copies the length and
the document between two reads of the sequence and keeps the copy only if the sequence was even and
unchanged (a seqlock): a copy torn by a concurrent write is retried, never returned.
"""

from __future__ import annotations

import json
import logging
import mmap
import struct
import time
from typing import Any

log = logging.getLogger("portway.stats")

SLOT_SIZE = 4 * 1024 * 1024
SLOT_HEADER = 16
_SEQUENCE = struct.Struct("<Q")
_LENGTH = struct.Struct("<I")
_READ_ATTEMPTS = 5
_RETRY_PAUSE = 0.001  # a document is copied in well under a millisecond; the writer is done by then


class StatsBoard:
    """``slots`` slots of ``slot_size`` bytes; create before forking. See the module docstring."""

    def __init__(self, slots: int, slot_size: int = SLOT_SIZE) -> None:
        if slots < 1:
            raise ValueError(f"a stats board needs at least one slot, got {slots}")
        if slot_size <= SLOT_HEADER or slot_size > SLOT_HEADER + 0xFFFFFFFF:
            raise ValueError(f"slot_size must be from {SLOT_HEADER + 1} to 4 GiB, got {slot_size}")
        self.slots = slots
        self.slot_size = slot_size
        # fileno -1: anonymous memory, MAP_SHARED by default, so forked children share the pages.
        self._map = mmap.mmap(-1, slots * slot_size)
        self._too_large: set[int] = set()  # slots whose oversized document was already reported

    @property
    def capacity(self) -> int:
        """The largest document (bytes of JSON) a slot holds."""
        return self.slot_size - SLOT_HEADER

    def close(self) -> None:
        self._map.close()

    def _base(self, slot: int) -> int:
        if not 0 <= slot < self.slots:
            raise IndexError(f"slot {slot} is not on this board (0 to {self.slots - 1})")
        return slot * self.slot_size

    def sequence(self, slot: int) -> int:
        value: int = _SEQUENCE.unpack_from(self._map, self._base(slot))[0]
        return value

    # -- the writer (one per slot) -----------------------------------------------------------------

    def publish(self, slot: int, document: dict[str, Any]) -> bool:
        """Write ``document`` to ``slot``; False (logged once per slot) when it does not fit."""
        data = json.dumps(document, separators=(",", ":")).encode("utf-8")
        base = self._base(slot)
        if len(data) > self.capacity:
            if slot not in self._too_large:
                self._too_large.add(slot)
                log.error(
                    "statistics of slot %d take %d bytes, more than the %d a slot holds: not "
                    "published (the admin API shows the last ones that fitted)",
                    slot,
                    len(data),
                    self.capacity,
                )
            return False
        self._too_large.discard(slot)
        sequence = self.sequence(slot)
        _SEQUENCE.pack_into(self._map, base, sequence | 1)  # odd: readers retry
        _LENGTH.pack_into(self._map, base + 8, len(data))
        start = base + SLOT_HEADER
        self._map[start : start + len(data)] = data
        _SEQUENCE.pack_into(self._map, base, (sequence | 1) + 1)
        return True

    # -- readers -----------------------------------------------------------------------------------

    def read_raw(self, slot: int) -> bytes | None:
        """The document bytes of ``slot`` as one consistent copy; None if never published or torn
        on every attempt (a writer that keeps writing, or died halfway)."""
        base = self._base(slot)
        for attempt in range(_READ_ATTEMPTS):
            if attempt:
                time.sleep(_RETRY_PAUSE)
            before = self.sequence(slot)
            if before == 0:
                return None
            if before & 1:
                continue
            length: int = _LENGTH.unpack_from(self._map, base + 8)[0]
            if length > self.capacity:
                continue
            start = base + SLOT_HEADER
            data = self._map[start : start + length]
            if self.sequence(slot) == before:
                return data
        return None

    def read(self, slot: int) -> dict[str, Any] | None:
        """The document of ``slot``, parsed; None as for ``read_raw``."""
        data = self.read_raw(slot)
        if data is None:
            return None
        try:
            document = json.loads(data)
        except ValueError:  # cannot happen with a consistent copy; never let it stop a reader
            log.warning("stats slot %d held invalid JSON; ignored", slot)
            return None
        return document if isinstance(document, dict) else None

    def read_all(self) -> list[dict[str, Any] | None]:
        return [self.read(slot) for slot in range(self.slots)]
