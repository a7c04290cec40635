"""The access log and the per-worker statistics, fed by real traffic."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.gateway import GatewayThread
from tests.support.backends import Backend
from tests.support.client import KeepAliveClient, build_request, request, send_raw


def config(address: str, log_path: Path, **access_log: Any) -> dict[str, Any]:
    return {
        "server": {"access_log": {"path": str(log_path), **access_log}},
        "services": {"web": {"instances": [address]}},
        "routes": [
            {"name": "site", "hosts": ["test.local"], "path": "/", "service": "web"},
        ],
    }


def read_lines(path: Path, count: int, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"{count} access log lines expected, found {lines!r}")


def test_json_access_log_has_every_field_and_no_secrets(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    with Backend() as backend, GatewayThread(config(backend.address, log)) as g:
        ok = request(
            g.port,
            "GET",
            "/users/7?api_key=SECRET123&token=abc",
            headers={
                "User-Agent": "tester/1.0",
                "Referer": "https://ref.example/",
                "Authorization": "Bearer SECRET456",
                "Cookie": "session=SECRET789",
            },
        )
        missing = request(g.port, "GET", "/nothing", host="other.example")
        lines = read_lines(log, 2)
    first, second = (json.loads(line) for line in lines[:2])
    assert first["request_id"] == ok.header("x-request-id")
    assert first["status"] == 200 and first["method"] == "GET"
    assert first["path"] == "/users/7" and first["host"] == "test.local"
    assert first["client_ip"] == "127.0.0.1"
    assert first["route"] == "site" and first["service"] == "web"
    assert first["instance"] == backend.address
    assert first["user_agent"] == "tester/1.0" and first["referer"] == "https://ref.example/"
    assert first["bytes_out"] > len(ok.body) and first["bytes_in"] == 0
    assert first["connect_ms"] >= 0 and 0 <= first["first_byte_ms"] <= first["total_ms"]
    assert first["retries"] == 0 and first["cause"] == ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert "SECRET" not in log.read_text()  # query strings, Authorization, cookies never logged
    assert second["status"] == 404 and second["cause"] == "no_route" and second["route"] == ""
    assert second["request_id"] == missing.header("x-request-id")


@pytest.mark.parametrize("log_format", ["json", "combined"])
def test_the_referers_query_and_fragment_are_never_logged(tmp_path: Path, log_format: str) -> None:
    """A Referer carries its page's query (``?api_key=``) and fragment (``#access_token=``, the
    OAuth implicit flow): logged, they would leak the secrets the request's own query may not."""
    log = tmp_path / "access.log"
    referers = [
        "https://app.example/cb?api_key=SECRET1&x=2#access_token=SECRET3",
        "https://app.example/cb#access_token=SECRET4?y=1",
        "https://app.example/plain",
    ]
    with Backend() as backend, GatewayThread(config(backend.address, log, format=log_format)) as g:
        for referer in referers:
            assert request(g.port, "GET", "/r", headers={"Referer": referer}).status == 200
        lines = read_lines(log, 3)
    assert "SECRET" not in log.read_text()
    if log_format == "json":
        logged = [json.loads(line)["referer"] for line in lines]
    else:
        logged = [re.findall(r'"([^"]*)"', line)[1] for line in lines]
    assert logged == [
        "https://app.example/cb",
        "https://app.example/cb",
        "https://app.example/plain",
    ]


def test_protocol_errors_are_logged_too(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    with Backend() as backend, GatewayThread(config(backend.address, log)) as g:
        from tests.support.client import send_raw

        send_raw(g.port, b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n")
        (line,) = read_lines(log, 1)
    entry = json.loads(line)
    assert entry["status"] == 400 and entry["cause"] == "bad_request"
    assert len(entry["request_id"]) == 32


def test_combined_format_and_sampling_keeps_errors(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    with Backend() as backend:
        cfg = config(backend.address, log, format="combined", sample_rate=0.0)
        with GatewayThread(cfg) as g, KeepAliveClient(g.port) as client:
            for _ in range(5):
                assert client.request("GET", "/fine").status == 200
            assert client.request("GET", "/status/503", headers={"User-Agent": 'q"t'}).status == 503
            (line,) = read_lines(log, 1)
            time.sleep(0.3)
    assert len(log.read_text().splitlines()) == 1  # sampling 0 drops successes, keeps 5xx
    assert re.fullmatch(
        r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /status/503 HTTP/1\.1" '
        r'503 \d+ "-" "q\\"t"',
        line,
    ), line


def test_common_format_line_has_the_request_and_the_bytes_sent(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    with Backend() as backend, GatewayThread(config(backend.address, log, format="common")) as g:
        before = time.time()
        raw = send_raw(
            g.port,
            build_request(
                "POST", "/items/9?api_key=SECRET1", headers={"Connection": "close"}, body=b"abc"
            ),
        )
        (line,) = read_lines(log, 1)
        after = time.time()
    match = re.fullmatch(r'(\S+) - (\S+) \[([^]]+)\] "POST /items/9 HTTP/1\.1" (\d{3}) (\d+)', line)
    assert match, line
    client, user, when, status, size = match.groups()
    assert (client, user, status) == ("127.0.0.1", "-", "200")
    assert int(size) == len(raw)  # every byte the client received, head included
    logged = datetime.strptime(when, "%d/%b/%Y:%H:%M:%S %z").timestamp()
    assert int(before) <= logged <= after
    assert "SECRET" not in line


def test_sampling_keeps_about_its_share_and_every_5xx(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    sent, rate, errors = 400, 0.25, 3

    def logged() -> list[dict[str, Any]]:
        text = log.read_text() if log.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    with (
        Backend() as backend,
        GatewayThread(config(backend.address, log, sample_rate=rate)) as g,
        KeepAliveClient(g.port) as client,
    ):
        for i in range(sent):
            assert client.request("GET", f"/ok/{i}").status == 200
        for _ in range(errors):  # last: once they are written, every line before them is
            assert client.request("GET", "/status/502").status == 502
        deadline = time.monotonic() + 5
        while [e["status"] for e in logged()].count(502) < errors and time.monotonic() < deadline:
            time.sleep(0.05)
    entries = logged()
    assert [e["status"] for e in entries].count(502) == errors
    kept = sum(1 for e in entries if e["status"] == 200)
    # Binomial(400, 0.25): mean 100, standard deviation 8.7; this band is about 4.6 of them.
    assert 60 <= kept <= 140, kept


def test_worker_stats_count_by_route_service_method_and_status(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    with Backend() as backend, GatewayThread(config(backend.address, log, enabled=False)) as g:
        with KeepAliveClient(g.port) as client:
            for _ in range(3):
                client.request("GET", "/a")
            client.request("POST", "/status/502", body=b"12345")
        request(g.port, "GET", "/nothing", host="elsewhere.example")
        snapshot = g.call(g.gateway.ctx.stats.snapshot)
    requests = {tuple(row[:4]): row[4] for row in snapshot["requests"]}
    assert requests[("site", "web", "GET", "2xx")] == 3
    assert requests[("site", "web", "POST", "5xx")] == 1
    assert requests[("", "", "GET", "4xx")] == 1  # no route for that host
    durations = {tuple(row[:2]): row for row in snapshot["duration"]}
    counts, total = durations[("site", "web")][2:]
    assert sum(counts) == 4 and total > 0
    assert len(counts) == len(snapshot["buckets"]) + 1
    bytes_in = {tuple(row[:2]): row[2] for row in snapshot["bytes_in"]}
    assert bytes_in[("site", "web")] == 5
    assert dict((k, v) for k, v in snapshot["errors"]) == {"no_route": 1}
    assert snapshot["connections_total"] == 2


def test_a_sink_that_stops_taking_lines_does_not_grow_memory(tmp_path: Path) -> None:
    """A FIFO nobody reads blocks the writer thread; lines beyond the backlog are dropped."""
    import os

    from portway.config.observability import AccessLogConfig
    from portway.observability.access_log import MAX_BACKLOG, AccessLog
    from portway.observability.log_lines import Entry

    fifo = tmp_path / "stuck"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # lets the writer open it, never read
    try:
        access_log = AccessLog(AccessLogConfig(path=str(fifo)))
        entry = Entry(
            1.0, 2.0, 0.0, 0.0, 0.0, "/", 200, 0, 10, 0, "x" * 2000, "", "", "", b"", b"",
            "GET", "h", "1.1", "r", "s", "", "",
        )  # fmt: skip
        for _ in range(MAX_BACKLOG // (50 * 2000) + 40):
            for _ in range(50):
                access_log.add(entry)
            access_log.flush()
        time.sleep(0.2)
        assert access_log.dropped > 0
        assert 0 < access_log.backlog <= MAX_BACKLOG
    finally:
        os.close(reader)  # the writer's blocked write fails now, and it drains its backlog
    access_log.close()
