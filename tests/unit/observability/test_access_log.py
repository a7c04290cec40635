"""The access log's hand-assembled JSON lines say what ``json.dumps`` of their fields says."""

from __future__ import annotations

import json

import pytest

from portway.observability import access_log
from portway.observability.access_log import Entry


def _entry(**changes: object) -> Entry:
    entry = Entry(
        start=100.0,
        end=100.0123456,
        sent=100.001,
        first_byte=100.0105,
        connect=0.0,
        request=("GET", "example.com", "/a/b", "curl/8.0", ""),
        http_version="1.1",
        status=200,
        bytes_in=0,
        bytes_out=123,
        route="r1",
        service="svc",
        instance="127.0.0.1:8080",
        retries=0,
        cause="",
        client_ip="127.0.0.1",
        request_id="0123456789abcdef0123456789abcdef",
    )
    return entry._replace(**changes)


@pytest.mark.parametrize(
    "entry",
    [
        _entry(),
        _entry(connect=0.0015, retries=2, cause="upstream_timeout", status=504),
        _entry(request=("POST", "h\u00e9.example", '/q"uo\\te', 'ua "x"\t\x01', "r\u2028")),
        _entry(route='we"ird', service="s\\v", instance="[::1]:80", client_ip="::1"),
        _entry(request=None, sent=0.0, first_byte=0.0, request_id="client.id-1:2+3/4="),
    ],
)
def test_json_line_is_what_json_dumps_writes(entry: Entry) -> None:
    offset = 1_700_000_000.0
    for _ in range(2):  # the second time through the cache of quoted strings
        line = access_log._json(entry, offset, access_log._Clock())
        assert line.endswith("\n")
        expected = access_log._fields(entry, offset)
        parsed = json.loads(line)
        assert parsed.pop("time") == "2023-11-14T22:15:00.000Z"
        del expected["time"]
        assert parsed == expected
        body = json.dumps(expected, separators=(",", ":"))[1:]
        assert line.endswith(body + "\n")


@pytest.mark.parametrize(
    "micros",
    [0, 1, 10, 100, 500, 512, 999, 1000, 1001, 1500, 12345, 999_999, 1_000_000, 123_456_789],
)
def test_milliseconds_are_written_as_repr_of_round_writes_them(micros: int) -> None:
    for sign in (1, -1):
        seconds = sign * micros / 1_000_000
        assert access_log._ms(seconds) == repr(round(seconds * 1000, 3))
