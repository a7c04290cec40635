"""The deterministic byte pattern that test backends stream and test clients upload.

Byte ``i`` of a pattern body is ``i % 251``: a prime period, so a chunk boundary at a power of two
never lines up with the period and a dropped, duplicated or reordered chunk changes the digest.
Bodies are produced as views into one shared buffer, so a 1 GiB body never exists in memory.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator

PERIOD = 251
MAX_CHUNK = 1 << 20
# Long enough that a MAX_CHUNK window can start at any phase of the period.
_BUFFER = bytes(range(PERIOD)) * (MAX_CHUNK // PERIOD + 2)


def pattern_views(total: int, chunk_size: int = 64 * 1024, offset: int = 0) -> Iterator[memoryview]:
    """Views covering pattern bytes ``offset .. offset+total``, each at most ``chunk_size`` long."""
    if total < 0:
        raise ValueError(f"negative length: {total}")
    size = max(1, min(chunk_size, MAX_CHUNK))
    view = memoryview(_BUFFER)
    position = offset
    end = offset + total
    while position < end:
        length = min(size, end - position)
        phase = position % PERIOD
        yield view[phase : phase + length]
        position += length


def pattern_bytes(total: int, offset: int = 0) -> bytes:
    """The pattern as one bytes object: for small bodies only."""
    return b"".join(pattern_views(total, MAX_CHUNK, offset))


@functools.cache
def pattern_sha256(total: int) -> str:
    """The hex SHA-256 of the first ``total`` pattern bytes (cached: 1 GiB takes seconds)."""
    digest = hashlib.sha256()
    for chunk in pattern_views(total, MAX_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()
