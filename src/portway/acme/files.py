"""Files other processes read while the ACME process replaces them.

Workers read challenge files and certificates, the admin process reads ``status.json``, all while
they may be rewritten. Writing to a temporary file in the same directory and renaming it over the
old one (``os.replace``, atomic on POSIX) means a reader sees the whole old file or the whole new
one, never a truncated mix; ``fsync`` first makes a crash leave one of the two, not an empty file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` in one rename; ``mode`` is set before the file is visible,
    so a private key is never readable by others, not even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def remove_quietly(path: Path) -> None:
    """Delete ``path`` if it is there: cleaning up must not fail an order that succeeded."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
