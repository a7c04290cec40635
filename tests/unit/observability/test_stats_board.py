"""The stats board: one JSON document per slot, shared across fork, never read torn."""

from __future__ import annotations

import json
import logging
import os
import struct
import time

import pytest

from portway.observability.stats_board import SLOT_HEADER, StatsBoard


def test_a_slot_is_empty_until_published_then_holds_the_last_document() -> None:
    board = StatsBoard(3, slot_size=4096)
    assert board.read_all() == [None, None, None]
    assert board.publish(1, {"pid": 7, "requests": [["site", "web", "GET", "2xx", 3]]})
    assert board.publish(1, {"pid": 7, "requests": [["site", "web", "GET", "2xx", 5]]})
    assert board.read_all() == [
        None,
        {"pid": 7, "requests": [["site", "web", "GET", "2xx", 5]]},
        None,
    ]
    assert board.sequence(1) == 4  # two publishes, +2 each


def test_a_document_too_large_is_logged_once_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    board = StatsBoard(1, slot_size=256)
    assert board.publish(0, {"n": 1})
    caplog.set_level(logging.ERROR, logger="portway.stats")
    big = {"n": 2, "fill": "x" * 400}
    assert not board.publish(0, big)
    assert not board.publish(0, big)
    assert board.read(0) == {"n": 1}  # the last one that fitted
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "more than the 240 a slot holds" in messages[0], messages
    assert board.publish(0, {"n": 3}) and board.read(0) == {"n": 3}


def test_a_slot_being_written_is_not_read() -> None:
    board = StatsBoard(1, slot_size=1024)
    board.publish(0, {"n": 1})
    # What a reader sees while the writer is between its two sequence updates (or died there).
    struct.pack_into("<Q", board._map, 0, board.sequence(0) + 1)
    started = time.monotonic()
    assert board.read(0) is None
    assert time.monotonic() - started < 0.1  # a few short retries, then it gives up
    # A restarted writer of that slot makes it readable again.
    assert board.publish(0, {"n": 2}) and board.read(0) == {"n": 2}


def test_a_length_beyond_the_slot_is_not_trusted() -> None:
    board = StatsBoard(1, slot_size=1024)
    board.publish(0, {"n": 1})
    struct.pack_into("<I", board._map, 8, 1024)  # more than the 1024 - 16 bytes a slot holds
    assert board.read(0) is None


def test_a_document_published_in_a_forked_child_is_read_in_the_parent() -> None:
    board = StatsBoard(2, slot_size=4096)
    pid = os.fork()
    if pid == 0:  # a worker's side
        code = 1
        try:
            code = 0 if board.publish(1, {"pid": os.getpid(), "requests": 42}) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert board.read(0) is None
    assert board.read(1) == {"pid": pid, "requests": 42}


def test_reads_racing_a_writer_in_another_process_are_whole_or_none() -> None:
    """A child rewrites one slot as fast as it can, alternating documents of very different
    sizes; every copy the parent gets must be one whole document, never a mix of two."""
    board = StatsBoard(1, slot_size=SLOT_HEADER + 300_000)
    started_read, started_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            board.publish(0, {"n": 0, "fill": ""})
            os.write(started_write, b"!")
            deadline = time.monotonic() + 1.0
            n = 0
            while time.monotonic() < deadline:
                n += 1
                board.publish(0, {"n": n, "fill": str(n % 10) * (1000 if n % 2 else 250_000)})
            code = 0
        finally:
            os._exit(code)
    os.read(started_read, 1)
    whole = torn = 0
    seen = set()
    while True:
        finished, status = os.waitpid(pid, os.WNOHANG)
        raw = board.read_raw(0)
        if raw is None:
            torn += 1
        else:
            document = json.loads(raw)
            n, fill = document["n"], document["fill"]
            expected = "" if n == 0 else str(n % 10) * (1000 if n % 2 else 250_000)
            assert fill == expected, f"document {n} read torn"
            whole += 1
            seen.add(n)
        if finished:
            break
    os.close(started_read)
    os.close(started_write)
    assert os.waitstatus_to_exitcode(status) == 0
    assert whole > 10 and len(seen) > 2, (whole, torn, len(seen))


def test_slot_numbers_are_checked() -> None:
    board = StatsBoard(2, slot_size=64)
    with pytest.raises(IndexError):
        board.publish(2, {})
    with pytest.raises(IndexError):
        board.read(-1)
    with pytest.raises(ValueError, match="at least one slot"):
        StatsBoard(0)
