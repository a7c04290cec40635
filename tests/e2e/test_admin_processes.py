"""The admin process of a real ``portway run --workers 2``: metrics summed across the workers,
checked by Prometheus's own tools (``promtool`` and a real ``prometheus`` scraping the admin port).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.admin import (
    PrometheusServer,
    admin_get,
    metric_value,
    promtool_check_metrics,
    wait_until,
)
from tests.support.backends import Backend
from tests.support.client import request
from tests.support.processes import PortwayProcess, run_portway

REQUESTS = 60  # on separate connections: the kernel spreads them over both workers
SITE_2XX = 'sum(portway_requests_total{route="site",status_class="2xx"})'


def config_for(address: str) -> str:
    return (
        'listeners: [{address: "127.0.0.1:0"}]\n'
        f'services:\n  web: {{instances: ["{address}"]}}\n'
        "routes:\n  - {name: site, path: /, service: web}\n"
        "server: {access_log: {enabled: false}}\n"
    )


def site_requests(metrics_text: str) -> float:
    value = metric_value(
        metrics_text,
        "portway_requests_total",
        route="site",
        service="web",
        method="GET",
        status_class="2xx",
    )
    return value or 0.0


def per_worker_requests(gw: PortwayProcess) -> list[int]:
    ready = admin_get(gw.admin_port, "/readyz").json()
    return [worker.get("requests", 0) for worker in ready["workers"]]


def test_metrics_sum_both_workers_pass_promtool_and_a_real_prometheus_reads_them(
    tmp_path: Path,
) -> None:
    with Backend() as backend, run_portway(config_for(backend.address), workers=2) as gw:
        assert gw.admin_port and gw.admin_host == "127.0.0.1"
        ready = wait_until(lambda: admin_get(gw.admin_port, "/readyz").status == 200, timeout=5)
        assert ready, admin_get(gw.admin_port, "/readyz").text
        for i in range(REQUESTS):
            assert request(gw.port, "GET", f"/page/{i}").status == 200

        # Each worker publishes about once a second; both must have served some of them.
        counts = wait_until(lambda: sum(c := per_worker_requests(gw)) == REQUESTS and c, timeout=5)
        assert counts and len(counts) == 2 and all(c > 0 for c in counts), counts

        text = admin_get(gw.admin_port, "/metrics").text
        assert site_requests(text) == REQUESTS
        assert "portway_workers_reporting 2.0" in text
        checked = promtool_check_metrics(text)
        assert checked.returncode == 0 and checked.stdout + checked.stderr == "", (
            checked.stdout + checked.stderr
        )

        target = f"{gw.admin_host}:{gw.admin_port}"
        with PrometheusServer(tmp_path, target) as prometheus:
            total = wait_until(lambda: prometheus.scalar(SITE_2XX) == REQUESTS, timeout=15)
            assert total, (prometheus.query(SITE_2XX), prometheus.logs())
            assert prometheus.scalar('up{job="portway"}') == 1.0


def test_reloads_kills_and_restarts_keep_the_totals_right() -> None:
    with Backend() as backend, run_portway(config_for(backend.address), workers=2) as gw:
        for i in range(20):
            assert request(gw.port, "GET", f"/a/{i}").status == 200
        assert wait_until(lambda: site_requests(admin_get(gw.admin_port, "/metrics").text) == 20)

        gw.proc.send_signal(signal.SIGHUP)  # the same file: a valid reload
        gw.wait_for_stderr(r"SIGHUP: config is valid")
        gw.config_path.write_text("routes: [")
        gw.proc.send_signal(signal.SIGHUP)
        gw.wait_for_stderr(r"SIGHUP: the new config is invalid")

        def reloads() -> str:
            return admin_get(gw.admin_port, "/metrics").text

        assert wait_until(lambda: 'portway_config_reloads_total{result="failure"} 1.0' in reloads())
        assert 'portway_config_reloads_total{result="success"} 1.0' in reloads()
        # The recent reloads, newest first, say why the refused one was refused.
        recent = admin_get(gw.admin_port, "/stats").json()["reloads"]["recent"]
        assert [event["ok"] for event in recent] == [False, True]
        assert recent[1]["error"] is None and recent[0]["time"] >= recent[1]["time"]
        assert str(gw.config_path) in recent[0]["error"] and ":1:" in recent[0]["error"]
        # Every worker serves the reloaded config again (same file, same fingerprint): ready.
        assert wait_until(lambda: admin_get(gw.admin_port, "/readyz").status == 200)

        # A worker killed: its replacement counts from zero, the totals keep what it counted.
        ready = admin_get(gw.admin_port, "/readyz").json()
        victim = max(ready["workers"], key=lambda w: w["requests"])
        os.kill(victim["pid"], signal.SIGKILL)
        gw.wait_for_stderr(rf"worker \d+ \(pid {victim['pid']}\) exited")
        gw.wait_for_stderr(r"worker \d+ restarted as pid")
        assert wait_until(lambda: victim["pid"] not in [w.get("pid") for w in per_worker_ready(gw)])
        for i in range(10):
            assert request(gw.port, "GET", f"/b/{i}").status == 200
        assert wait_until(lambda: site_requests(admin_get(gw.admin_port, "/metrics").text) == 30)

        # The admin process killed: restarted on the same port by the supervisor.
        os.kill(gw.admin_pid, signal.SIGKILL)
        gw.wait_for_stderr(r"admin process restarted as pid")
        assert admin_get(gw.admin_port, "/healthz").status == 200
        assert gw.stop() == 0


def per_worker_ready(gw: PortwayProcess) -> list[dict[str, int]]:
    workers: list[dict[str, int]] = admin_get(gw.admin_port, "/readyz").json()["workers"]
    return workers


def test_admin_none_runs_no_admin_process_and_a_public_address_needs_a_token(
    tmp_path: Path,
) -> None:
    with Backend() as backend:
        with run_portway(config_for(backend.address), workers=1, admin="none") as gw:
            assert gw.admin_port == 0
            assert "admin on" not in gw.stderr_text()
            assert len(gw.worker_pids()) == 1  # the worker only
        config = tmp_path / "portway.yaml"
        config.write_text(config_for(backend.address))
        refused = subprocess.run(
            [
                sys.executable,
                "-m",
                "portway",
                "run",
                "--config",
                str(config),
                "--admin",
                "0.0.0.0:0",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert refused.returncode == 2
    assert (
        "--admin: the admin listener on 0.0.0.0:0 is reachable from other machines: "
        "set admin.token" in refused.stderr
    ), refused.stderr
