"""``portway top`` against a real admin API: one frame (``--once``), the rates it shows, Ctrl-C."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

from rich.console import Console

from portway.admin.rates import live_numbers
from portway.admin.top import fetch_stats, frame
from tests.e2e.gateway import GatewayThread
from tests.e2e.test_admin import config
from tests.support.admin import wait_until
from tests.support.backends import Backend
from tests.support.client import request
from tests.support.processes import run_portway

TOKEN = "top-token"
TOP = (sys.executable, "-m", "portway", "top")


def gateway_config(web: str, api: str) -> dict[str, Any]:
    return config(web, api, admin={"address": "127.0.0.1:0", "token": TOKEN})


def portway_top(*args: str, token: str | None = TOKEN) -> list[str]:
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    env.pop("PORTWAY_ADMIN_TOKEN", None)
    if token is not None:
        env["PORTWAY_ADMIN_TOKEN"] = token
    done = subprocess.run(
        [*TOP, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def cells(lines: list[str], first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    for line in lines:
        parts = [p.strip() for p in re.split(r"[│┃]", line)[1:-1]]
        if parts and parts[0] == first:
            return parts
    raise AssertionError(f"no row {first!r} in:\n" + "\n".join(lines))


def test_once_prints_one_frame_with_the_counts_sent_and_instances() -> None:
    with (
        Backend("web") as web,
        Backend("api") as api,
        GatewayThread(gateway_config(web.address, api.address), admin=True) as g,
    ):
        for i in range(6):
            assert request(g.port, "GET", f"/api/{i}").status == 200
        for _ in range(2):
            assert request(g.port, "GET", "/status/500", host="other").status == 500
        lines = portway_top("--admin", f"127.0.0.1:{g.admin_port}", "--once", "--interval", "0.2")
        assert lines[0].startswith(f"portway top  http://127.0.0.1:{g.admin_port}")
        assert "interval 0.2s" in lines[0] and "workers 1" in lines[0]
        # route, service, requests, 5xx, req/s, 5xx/s, p50, p99: nothing was sent between polls.
        assert cells(lines, "api") == ["api", "api", "6", "0", "0.0", "0.0", "-", "-"]
        assert cells(lines, "site") == ["site", "web", "2", "2", "0.0", "0.0", "-", "-"]
        assert cells(lines, "web") == ["web", "2", "2", "0.0", "0.0", "-", "-"]  # the service
        assert cells(lines, "api")[:3] == ["api", "api", "6"]
        instance = next(line for line in lines if web.address in line)
        assert [p.strip() for p in instance.split("│")[1:-1]] == [
            "web",
            web.address,
            "1",
            "unchecked",
            "no",
            "0",
            "0",
        ]
        # The api service's second instance refuses connections: ejected by the first refusal.
        refused = g.config.services["api"].instances[1].address
        line = next(line for line in lines if refused in line)
        assert [p.strip() for p in line.split("│")[1:-1]] == [
            "api",
            refused,
            "3",
            "unchecked",
            "ejected",
            "1",
            "0",
        ]
        assert "reloads: 0 succeeded, 0 failed, last success never" in lines


def test_a_wrong_token_is_reported_and_exits_1() -> None:
    with (
        Backend("web") as web,
        Backend("api") as api,
        GatewayThread(gateway_config(web.address, api.address), admin=True) as g,
    ):
        done = subprocess.run(
            [*TOP, "--admin", f"127.0.0.1:{g.admin_port}", "--once", "--token", "wrong"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 1
        assert "HTTP 401 (wrong or missing --token)" in done.stdout


def test_the_frame_shows_rates_and_quantiles_of_the_interval() -> None:
    with (
        Backend("web") as web,
        Backend("api") as api,
        GatewayThread(gateway_config(web.address, api.address), admin=True) as g,
    ):
        base = f"http://127.0.0.1:{g.admin_port}"
        first = fetch_stats(base, TOKEN)
        for i in range(10):
            assert request(g.port, "GET", f"/api/{i}").status == 200
        second = fetch_stats(base, TOKEN)
        live = live_numbers(first, second)
        assert live.seconds is not None and live.seconds > 0
        api_route = live.routes[0]
        assert (api_route.name, api_route.requests) == ("api", 10)
        assert api_route.requests_per_second == 10 / live.seconds
        assert api_route.p50 is not None and api_route.p99 is not None
        assert 0 < api_route.p50 <= api_route.p99 <= 10.0
        console = Console(file=io.StringIO(), width=200, color_system=None)
        console.print(frame(second, live, base))
        lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
        row = cells(lines, "api")
        assert row[:4] == ["api", "api", "10", "0"]
        rate = 10 / live.seconds
        assert row[4] == (f"{rate:.0f}" if rate >= 100 else f"{rate:.1f}")
        assert row[6].endswith(("ms", " s")) and row[7].endswith(("ms", " s"))
    assert "telemetry dropped (sink too slow): access log 0, spans 0" in lines


def test_ctrl_c_ends_the_live_view_with_exit_code_0() -> None:
    with (
        Backend("web") as web,
        Backend("api") as api,
        GatewayThread(gateway_config(web.address, api.address), admin=True) as g,
    ):
        assert request(g.port, "GET", "/api/1").status == 200
        env = {**os.environ, "COLUMNS": "200", "PORTWAY_ADMIN_TOKEN": TOKEN}
        top = subprocess.Popen(
            [*TOP, "--admin", f"127.0.0.1:{g.admin_port}", "--interval", "0.2"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            time.sleep(2.0)  # start-up and a few polls
            assert top.poll() is None, top.communicate()
            top.send_signal(signal.SIGINT)
            out, err = top.communicate(timeout=10)
        finally:
            if top.poll() is None:
                top.kill()
                top.wait()
        assert top.returncode == 0, err
        # Off a terminal, rich's Live prints the last frame when it stops.
        assert cells(out.splitlines(), "api")[:3] == ["api", "api", "1"]


def test_the_frame_shows_policy_refusals_and_why_the_last_reload_was_refused() -> None:
    """Against ``portway run``: its supervisor decides reloads, and a refused one says why."""
    config_text = (
        'listeners: [{address: "127.0.0.1:0"}]\n'
        'services:\n  web: {instances: ["%s"]}\n'
        "policies:\n  tight: {rate_limit: {requests: 1, per: 1m}}\n"
        "routes:\n  - {name: site, path: /, service: web, policies: [tight]}\n"
        "server: {access_log: {enabled: false}}\n"
    )
    with Backend("web") as web, run_portway(config_text % web.address) as gw:
        assert [request(gw.port, "GET", "/").status for _ in range(3)] == [200, 429, 429]
        gw.config_path.write_text("routes: [")
        gw.proc.send_signal(signal.SIGHUP)
        gw.wait_for_stderr(r"SIGHUP: the new config is invalid")

        def frame_lines() -> list[str] | None:
            lines = portway_top("--admin", f"127.0.0.1:{gw.admin_port}", "--once", token=None)
            return lines if "refused by policies: site/tight rate_limited 2" in lines else None

        lines = wait_until(frame_lines)  # the worker reports about once a second
        assert lines, portway_top("--admin", f"127.0.0.1:{gw.admin_port}", "--once", token=None)
    (reloads,) = [line for line in lines if line.startswith("reloads: ")]
    assert reloads.startswith("reloads: 0 succeeded, 1 failed, last success never; last attempt ")
    assert "refused at " in reloads and str(gw.config_path) in reloads
    assert "gateway errors: rate_limited 2" in lines
