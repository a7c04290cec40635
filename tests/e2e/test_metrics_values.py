"""The values of ``/metrics`` after real traffic of known shape: bytes, connections, durations,
retries, circuit-breaker overflows, ejections, and labels that never come from a request.

Each number is derived from what the test sent and received (bytes counted off the socket,
requests counted by the backend), not read back from the gateway's own bookkeeping.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from portway.admin.rates import live_numbers
from portway.admin.top import frame
from portway.config.resilience import OutlierDetectionConfig
from portway.observability.stats import DURATION_BUCKETS, METHODS
from tests.e2e.gateway import GatewayThread
from tests.e2e.test_access_log_and_stats import read_lines
from tests.e2e.test_resilience import concurrently
from tests.support.admin import admin_get, metric_value, promtool_check_metrics, wait_until
from tests.support.backends import Backend
from tests.support.client import KeepAliveClient, build_request, request, send_raw
from tests.support.flaky import FlakyBackend

SITE = {"route": "site", "service": "web"}


def scrape(g: GatewayThread) -> str:
    response = admin_get(g.admin_port, "/metrics")
    assert response.status == 200
    return response.text


def value(text: str, name: str, **labels: str) -> float:
    found = metric_value(text, name, **labels)
    assert found is not None, f"no sample {name}{labels}"
    return found


def single(address: str, **extra: Any) -> dict[str, Any]:
    return {
        "services": {"web": {"instances": [address]}},
        "routes": [{"name": "site", "path": "/", "service": "web"}],
        **extra,
    }


def test_bytes_in_and_out_are_what_crossed_the_client_sockets() -> None:
    body = secrets.token_bytes(1000)
    with Backend() as backend, GatewayThread(single(backend.address), admin=True) as g:
        close = {"Connection": "close"}  # each read to its end: every byte the gateway sent
        raw = [
            send_raw(g.port, build_request("POST", "/upload", headers=close, body=body)),
            send_raw(g.port, build_request("GET", "/stream?bytes=5000", headers=close)),
            send_raw(g.port, build_request("PUT", "/x", headers=close, body=body[:10])),
        ]
        assert all(r.startswith(b"HTTP/1.1 200 ") for r in raw)
        text = scrape(g)
    assert value(text, "portway_request_body_bytes_total", **SITE) == 1010
    assert value(text, "portway_response_bytes_total", **SITE) == sum(len(r) for r in raw)


def test_open_connections_follow_the_clients_and_the_total_counts_each_once() -> None:
    with Backend() as backend, GatewayThread(single(backend.address), admin=True) as g:
        assert request(g.port, "GET", "/").status == 200  # connection 1, closed
        clients = [KeepAliveClient(g.port) for _ in range(3)]
        try:
            for client in clients:
                for _ in range(2):  # two requests, still one connection each
                    assert client.request("GET", "/").status == 200
            text = scrape(g)
            assert value(text, "portway_client_connections_open") == 3
            assert value(text, "portway_client_connections_total") == 4
        finally:
            for client in clients:
                client.close()
        closed = wait_until(lambda: metric_value(scrape(g), "portway_client_connections_open") == 0)
        assert closed, scrape(g)
        assert value(scrape(g), "portway_client_connections_total") == 4
        requests = value(
            scrape(g), "portway_requests_total", **SITE, method="GET", status_class="2xx"
        )
        assert requests == 7


def test_open_upstream_connections_are_the_ones_the_instance_has_open() -> None:
    with Backend() as backend, GatewayThread(single(backend.address), admin=True) as g:
        assert value(scrape(g), "portway_upstream_connections_open", service="web") == 0
        results = concurrently(
            *(lambda: request(g.port, "GET", "/slow?delay=0.3", timeout=10) for _ in range(3))
        )
        assert [r.status for r, _ in results] == [200] * 3
        # Three at once needed three connections; the pool keeps them idle for the next requests.
        assert backend.open_connections == 3
        assert value(scrape(g), "portway_upstream_connections_open", service="web") == 3


def test_duration_histograms_place_a_slow_upstream_in_its_buckets() -> None:
    delay = 0.03
    count = 4
    with Backend() as backend, GatewayThread(single(backend.address), admin=True) as g:
        for _ in range(count):
            assert request(g.port, "GET", f"/slow?delay={delay}").status == 200
        text = scrape(g)
    assert tuple(DURATION_BUCKETS)[:6] == (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05)
    for name, labels in (
        ("portway_request_duration_seconds", SITE),
        ("portway_upstream_duration_seconds", {"service": "web"}),
    ):
        # Every request waited at least the delay: nothing at or below 25 ms, all of them by +Inf.
        assert value(text, f"{name}_bucket", **labels, le="0.025") == 0, name
        assert value(text, f"{name}_bucket", **labels, le="+Inf") == count, name
        assert value(text, f"{name}_count", **labels) == count, name
        assert count * delay <= value(text, f"{name}_sum", **labels) < count * 2.0, name
    lint = promtool_check_metrics(text)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_retries_and_ejections_count_what_the_failing_instance_received(tmp_path: Path) -> None:
    """An instance answering 503 to everything: each request it gets is retried on the other
    (the access log says so per request) until five in a row eject it."""
    log = tmp_path / "access.log"
    with FlakyBackend("failing") as failing, Backend("ok") as ok:
        failing.set(status=503)
        cfg = {
            "server": {"access_log": {"path": str(log)}},
            "services": {"web": {"instances": [failing.address, ok.address]}},
            "routes": [{"name": "site", "path": "/", "service": "web"}],
        }
        with GatewayThread(cfg, admin=True) as g:
            sent = 16
            assert [request(g.port, "GET", f"/r/{i}").status for i in range(sent)] == [200] * sent
            text = scrape(g)
            lines = read_lines(log, sent)
    retried = failing.received
    # It gets requests until the fifth 503 in a row ejects it, for longer than the test lasts.
    assert retried == OutlierDetectionConfig().consecutive_5xx
    assert value(text, "portway_retries_total", service="web") == retried
    ejections = "portway_instance_ejections_total"
    assert value(text, ejections, service="web", instance=failing.address) == 1
    assert value(text, "portway_instance_ejected", service="web", instance=failing.address) == 1
    assert value(text, ejections, service="web", instance=ok.address) == 0
    entries = [json.loads(line) for line in lines]
    assert sum(e["retries"] for e in entries) == retried
    for entry in entries:  # the instance logged is the one that answered
        assert (entry["instance"], entry["status"]) == (ok.address, 200)
        assert entry["retries"] in (0, 1)
        assert entry["first_byte_ms"] >= 0 and entry["total_ms"] >= entry["first_byte_ms"]


def test_circuit_breaker_overflows_are_counted_by_limit() -> None:
    with Backend() as backend:
        cfg = single(backend.address)
        cfg["services"]["web"]["circuit_breaker"] = {"max_requests": 1}
        with GatewayThread(cfg, admin=True) as g:
            results = concurrently(
                *(lambda: request(g.port, "GET", "/slow?delay=1", timeout=10) for _ in range(4))
            )
            text = scrape(g)
    statuses = sorted(r.status for r, _ in results)
    assert statuses == [200, 503, 503, 503]
    overflowed = [r for r, _ in results if r.header("portway-error") == "overflow_max_requests"]
    assert len(overflowed) == 3
    labels = {"service": "web", "limit": "max_requests"}
    assert value(text, "portway_circuit_breaker_overflows_total", **labels) == 3
    assert value(text, "portway_local_errors_total", cause="overflow_max_requests") == 3


def test_label_values_come_from_the_config_never_from_requests() -> None:
    """Random paths, hosts and an unusual method add no series: label cardinality is bounded by
    the config and fixed sets, whatever clients send."""
    with Backend() as backend, GatewayThread(single(backend.address), admin=True) as g:
        assert request(g.port, "GET", "/first").status == 200
        before = scrape(g)
        tokens = [secrets.token_hex(8) for _ in range(40)]
        for token in tokens:
            assert request(g.port, "GET", f"/{token}?q={token}", host=f"{token}.test").status == 200
        assert request(g.port, "PROPFIND", "/dav").status == 200
        after = scrape(g)

    def series(text: str) -> set[str]:
        return {line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}

    assert not any(token in after for token in tokens)
    # The only series added: PROPFIND, counted as OTHER (with its histogram's per-route series
    # unchanged, since the route and service are the same).
    added = series(after) - series(before)
    assert added == {
        'portway_requests_total{method="OTHER",route="site",service="web",status_class="2xx"}'
    }
    assert value(after, "portway_requests_total", **SITE, method="GET", status_class="2xx") == 41
    label_values = set(re.findall(r'(\w+)="([^"]*)"', after))
    methods = {v for k, v in label_values if k == "method"}
    assert methods <= METHODS | {"OTHER"}
    assert {v for k, v in label_values if k == "route"} <= {"site", ""}


def test_access_log_lines_a_stuck_sink_dropped_are_counted(tmp_path: Path) -> None:
    """The access log's file is a FIFO nobody reads: its writer blocks, the backlog fills (32 MiB)
    and further lines are dropped. Every request is then either a line that reaches the FIFO once
    it is read, or a line counted in ``portway_telemetry_dropped_total`` and ``/stats``."""
    with gateway_with_a_stuck_access_log(tmp_path) as (g, reader):
        text = scrape(g)
        assert value(text, "portway_telemetry_dropped_total", signal="access_log") == 0
        assert value(text, "portway_telemetry_dropped_total", signal="spans") == 0
        access_log = g.gateway.ctx.access_log
        assert access_log is not None
        sent = send_until_lines_are_dropped(g)
        dropped = settled_drop_count(g)
        assert wait_until(
            lambda: (
                metric_value(scrape(g), "portway_telemetry_dropped_total", signal="access_log")
                == dropped
            )
        )
        stats = admin_get(g.admin_port, "/stats").json()
        assert stats["telemetry_dropped"] == {"access_log": dropped, "spans": 0}
        console = Console(file=io.StringIO(), width=200, color_system=None)
        console.print(frame(stats, live_numbers(stats, stats), "admin"))
        shown = f"telemetry dropped (sink too slow): access log {dropped:.0f}, spans 0"
        assert shown in console.file.getvalue().splitlines()  # type: ignore[attr-defined]
        written = drain_lines(reader, expected_lines=sent - int(dropped))
    assert 0 < dropped < sent
    assert written == sent - dropped, f"{sent} requests, {dropped} dropped, {written} lines read"


@contextlib.contextmanager
def gateway_with_a_stuck_access_log(tmp_path: Path) -> Iterator[tuple[GatewayThread, int]]:
    """A gateway (admin listener on) whose access log is a FIFO, and the FIFO's read end, open
    (so the writer can open the FIFO) and read by nobody but the test."""
    fifo = tmp_path / "stuck"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        log = {"access_log": {"path": str(fifo)}}
        with (
            Backend() as backend,
            GatewayThread(single(backend.address, server=log), admin=True) as g,
        ):
            yield g, reader
    finally:
        os.close(reader)


def send_until_lines_are_dropped(g: GatewayThread) -> int:
    """Requests with ~30 KB User-Agents (the backlog fills after about 1,100) until the gateway's
    access log drops lines; how many were sent."""
    access_log = g.gateway.ctx.access_log
    assert access_log is not None
    agent = "a" * 30_000
    sent = 0
    with KeepAliveClient(g.port) as client:
        while sent < 5000 and not g.call(lambda: access_log.dropped):
            for _ in range(50):
                assert client.request("GET", "/", headers={"User-Agent": agent}).status == 200
            sent += 50
    return sent


def settled_drop_count(g: GatewayThread) -> int:
    """The access log's count of dropped lines once every line has been handed to the writer or
    dropped: the last ones wait for the formatting delay and the next sweep, then (the FIFO still
    full) are dropped too."""
    access_log = g.gateway.ctx.access_log
    assert access_log is not None

    def settled() -> int | None:
        waiting, dropped = g.call(
            lambda: (len(access_log._pending) + len(access_log._batch), access_log.dropped)
        )
        return None if waiting else dropped

    dropped: int = wait_until(settled)
    assert dropped is not None, "lines still wait to be handed over"
    return dropped


def drain_lines(fd: int, expected_lines: int, timeout: float = 20.0) -> int:
    """Read the FIFO until ``expected_lines`` lines came (or ``timeout``); the lines read."""
    deadline = time.monotonic() + timeout
    lines = 0
    while lines < expected_lines and time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        lines += chunk.count(b"\n")
    return lines
