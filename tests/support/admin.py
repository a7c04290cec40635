"""Talking to the admin API, and to the real Prometheus tools that read it.

``promtool`` and ``prometheus`` come from Debian's ``prometheus`` package, which ``scripts/test``
installs (``scripts/install-test-deps``). A test that needs them fails with that instruction when
they are missing; it does not skip.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import free_port

MISSING_TOOL = (
    "{tool} not found: the admin metrics tests need Debian's prometheus package; "
    "run scripts/install-test-deps (scripts/test does)"
)


@dataclass
class AdminResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def admin_get(
    port: int,
    path: str,
    *,
    token: str | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> AdminResponse:
    """One request to the admin listener on 127.0.0.1:``port``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        connection.request(method, path, headers=sent)
        response = connection.getresponse()
        body = response.read()
        return AdminResponse(
            response.status, {k.lower(): v for k, v in response.getheaders()}, body
        )
    finally:
        connection.close()


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.1) -> Any:
    """Call ``predicate`` until it returns something truthy; that value, or the last falsy one."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AssertionError(MISSING_TOOL.format(tool=name))
    return path


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with exactly ``labels`` in the exposition ``text``, parsed
    as Prometheus parses it (``1.80414689e+09`` and ``1804146890.0`` are the same number), or
    None when there is no such sample."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on ``text`` (its stdin), as Prometheus's own linter sees it."""
    return subprocess.run(
        [tool("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


class PrometheusServer:
    """A real ``prometheus`` scraping one target every second, its storage under ``folder``."""

    def __init__(self, folder: Path, target: str) -> None:
        self.folder = folder
        self.port = free_port()
        config = folder / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: portway\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.log = folder / "prometheus.log"
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str) -> AdminResponse:
        return admin_get(self.port, path)

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited ({self.proc.returncode}):\n{self.logs()}")
            try:
                if self.get("/-/ready").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready within {timeout}s:\n{self.logs()}")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector ``promql`` evaluates to now (HTTP API ``/api/v1/query``)."""
        answer = self.get(f"/api/v1/query?query={quote(promql)}").json()
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def scalar(self, promql: str) -> float | None:
        """The value of a one-sample query; None while it has no sample."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def logs(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()

    def __enter__(self) -> Self:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
