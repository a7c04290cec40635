"""The access log: its hand-assembled JSON lines say what ``json.dumps`` of their fields says, and
its lines are formatted after a short delay, in bursts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from portway.config.observability import AccessLogConfig
from portway.observability import access_log, log_lines
from portway.observability.log_lines import Entry


def _entry(**changes: object) -> Entry:
    entry = Entry(
        start=100.0,
        end=100.0123456,
        sent=100.001,
        first_byte=100.0105,
        connect=0.0,
        path="/a/b",
        status=200,
        bytes_in=0,
        bytes_out=123,
        retries=0,
        request_id="0123456789abcdef0123456789abcdef",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        client_ip="127.0.0.1",
        consumer="",
        user_agent=b"curl/8.0",
        referer=b"",
        method="GET",
        host="example.com",
        http_version="1.1",
        route="r1",
        service="svc",
        instance="127.0.0.1:8080",
        cause="",
    )
    return entry._replace(**changes)


@pytest.mark.parametrize(
    "entry",
    [
        _entry(),
        _entry(connect=0.0015, retries=2, cause="upstream_timeout", status=504),
        _entry(
            method="POST",
            host="h\u00e9.example",
            path='/q"uo\\te',
            user_agent='ua "x"\t\x01\xe9'.encode("latin-1"),
            referer="r\u00e9?token=1".encode("latin-1"),
            consumer='al"ice',
        ),
        _entry(route='we"ird', service="s\\v", instance="[::1]:80", client_ip="::1"),
        _entry(
            path="", method="", host="", sent=0.0, first_byte=0.0, request_id="client.id-1:2+3/4="
        ),
    ],
)
def test_json_line_is_what_json_dumps_writes(entry: Entry) -> None:
    offset = 1_700_000_000.0
    repeats = log_lines.Repeats()
    for _ in range(2):  # the second time through the remembered pieces and quoted strings
        line = log_lines.json_line(entry, offset, repeats)
        assert line.endswith("\n")
        expected = log_lines.fields(entry, offset)
        parsed = json.loads(line)
        assert parsed.pop("time") == "2023-11-14T22:15:00.000Z"
        del expected["time"]
        assert parsed == expected
        body = json.dumps(expected, separators=(",", ":"))[1:]
        assert line.endswith(body + "\n")


def test_the_remembered_pieces_follow_each_field() -> None:
    """Lines that differ in one repeating field differ in it, whatever was formatted before."""
    base = _entry()
    changes: list[dict[str, object]] = [
        {"client_ip": "10.0.0.1"},
        {"consumer": "bob"},
        {"user_agent": b"other"},
        {"referer": b"https://a.example/x?secret=1"},
        {"method": "DELETE"},
        {"host": "b.example"},
        {"http_version": "1.0"},
        {"route": "r2"},
        {"service": "svc2"},
        {"instance": "127.0.0.2:80"},
        {"cause": "no_route"},
    ]
    repeats = log_lines.Repeats()
    first = json.loads(log_lines.json_line(base, 0.0, repeats))
    for change in changes:
        ((name, value),) = change.items()
        line = json.loads(log_lines.json_line(_entry(**change), 0.0, repeats))
        logged = value.decode("latin-1") if isinstance(value, bytes) else value
        if name == "referer":
            logged = "https://a.example/x"  # never its query
        assert line[name] == logged, name
        assert {k: v for k, v in line.items() if k != name} == {
            k: v for k, v in first.items() if k != name
        }, name
        # and back: the piece of the line before is the one remembered now
        assert json.loads(log_lines.json_line(base, 0.0, repeats)) == first, name


def test_the_remembered_pieces_are_bounded() -> None:
    """A stream of clients never seen again keeps at most the limit of pieces, and their lines
    stay right past it."""
    limit = log_lines._PIECES_LIMIT
    repeats = log_lines.Repeats()
    for n in range(limit + 10):
        entry = _entry(client_ip=f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}")
        line = json.loads(log_lines.json_line(entry, 0.0, repeats))
        assert line["client_ip"] == entry.client_ip
    assert 0 < len(repeats._clients) <= limit


def test_milliseconds_are_written_as_repr_of_round_writes_them() -> None:
    """Every fraction of a millisecond (three, two, one or no decimals), and large values."""
    large = [999_999, 1_000_000, 1_000_010, 123_456_789]
    for micros in [*range(3000), *large]:
        for sign in (1, -1):
            seconds = sign * micros / 1_000_000
            assert "".join(log_lines._ms(seconds)) == repr(round(seconds * 1000, 3)), seconds


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_entries_are_formatted_after_the_delay_not_as_they_come(tmp_path: Path) -> None:
    """On a loop, adding an entry costs an append: its line is formatted FORMAT_DELAY later,
    with the other entries of the burst, and reaches the file at the next flush."""
    path = tmp_path / "access.log"
    loop = asyncio.new_event_loop()
    log = access_log.AccessLog(AccessLogConfig(path=str(path)), loop)
    try:
        for status in (200, 201, 202):
            log.add(_entry(status=status))
        assert len(log._pending) == 3 and log._batch == []  # nothing formatted yet
        loop.run_until_complete(asyncio.sleep(access_log.FORMAT_DELAY * 5))
        assert log._pending == []
        assert [json.loads(line)["status"] for line in log._batch] == [200, 201, 202]
        log.add(_entry(status=404))  # a new burst: a new timer
        assert log._timer is not None
        log.flush()  # the sweep formats what waits, then hands everything over
        assert log._timer is None and log._pending == [] and log._batch == []
    finally:
        log.close()
        loop.close()
    assert [line["status"] for line in _lines(path)] == [200, 201, 202, 404]


def test_a_full_burst_is_formatted_at_once(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    loop = asyncio.new_event_loop()
    log = access_log.AccessLog(AccessLogConfig(path=str(path)), loop)
    try:
        for i in range(access_log.MAX_PENDING - 1):
            log.add(_entry(bytes_out=i))
        assert len(log._pending) == access_log.MAX_PENDING - 1
        log.add(_entry(bytes_out=access_log.MAX_PENDING - 1))  # the cap: formatted, no loop ran
        assert log._pending == [] and log._timer is None
        # MAX_PENDING >= HANDOFF: the formatted lines went on to the writer as well
        assert log._batch == [] and log._handed > 0
    finally:
        log.close()
        loop.close()
    assert [line["bytes_out"] for line in _lines(path)] == list(range(access_log.MAX_PENDING))


def test_without_a_loop_each_entry_is_formatted_as_it_is_added(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = access_log.AccessLog(AccessLogConfig(path=str(path), format="common"))
    try:
        log.add(_entry(status=503, method="GET", host="h", path="/x", user_agent=b""))
        assert log._pending == [] and len(log._batch) == 1
        assert log._batch[0].startswith("127.0.0.1 - - [")
        assert '"GET /x HTTP/1.1" 503 123' in log._batch[0]
    finally:
        log.close()
    assert path.read_text().count("\n") == 1
