"""The admin dashboard in a real headless Chromium (Selenium, chromedriver).

Traffic of known size goes through a gateway; the page, opened with the admin token in its URL
fragment, must show exactly those counts and each instance's health, log nothing at error level on
the console, and compute the same rates and quantiles as ``portway.admin.rates`` on the same two
``/stats`` answers. A screenshot is saved to ``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from portway.admin.rates import live_numbers
from tests.e2e.gateway import GatewayThread
from tests.e2e.test_admin import config
from tests.e2e.test_metrics_values import (
    drain_lines,
    gateway_with_a_stuck_access_log,
    send_until_lines_are_dropped,
    settled_drop_count,
)
from tests.support.admin import admin_get, wait_until
from tests.support.backends import Backend
from tests.support.browser import chromium, console_errors
from tests.support.client import request
from tests.support.processes import run_portway

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "dashboard-token"
API_REQUESTS = 60  # sent over about 3 s while the page polls, so its charts have a shape
SITE_OK = 2
SITE_ERRORS = 3


def text(driver: Any, selector: str) -> str | None:
    """The text of the element ``selector`` finds, read in one script: the page replaces its
    tables on every poll, so an element found by one WebDriver call may be gone by the next."""
    value: str | None = driver.execute_script(
        "const found = document.querySelector(arguments[0]);"
        "return found === null ? null : found.textContent;",
        selector,
    )
    return value


def test_the_dashboard_shows_the_traffic_sent_and_instance_health(tmp_path: Path) -> None:
    with Backend("web") as web, Backend("api") as api:
        cfg = config(web.address, api.address, admin={"address": "127.0.0.1:0", "token": TOKEN})
        cfg["services"]["web"]["health_check"] = {
            "type": "tcp",
            "interval": "100ms",
            "jitter": 0,
            "unhealthy_threshold": 1,
            "healthy_threshold": 1,
        }
        cfg["policies"] = {"tight": {"rate_limit": {"requests": 1, "per": "1m"}}}
        cfg["routes"].insert(
            0, {"name": "tight", "path": "/tight", "service": "web", "policies": ["tight"]}
        )
        with GatewayThread(cfg, admin=True) as g, chromium(tmp_path / "profile") as driver:
            statuses: list[int] = []

            def send_api_traffic() -> None:
                for i in range(API_REQUESTS):
                    statuses.append(request(g.port, "GET", f"/api/{i}").status)
                    time.sleep(0.05)

            for _ in range(SITE_OK):
                assert request(g.port, "GET", "/", host="other").status == 200
            for _ in range(SITE_ERRORS):
                assert request(g.port, "GET", "/status/500", host="other").status == 500
            tight = [request(g.port, "GET", "/tight", host="other").status for _ in range(3)]
            assert tight == [200, 429, 429]

            driver.get(f"http://127.0.0.1:{g.admin_port}/dashboard#token={TOKEN}&interval=0.3")
            sender = threading.Thread(target=send_api_traffic)
            sender.start()
            # While traffic flows the page shows a rate and quantiles: the screenshot then.
            quantiles = [
                f'tr[data-{kind}="api"] td[data-field="{field}"]'
                for kind in ("route", "service")
                for field in ("p50", "p99")
            ]

            def showing_quantiles() -> bool:
                return all((text(driver, q) or "-").endswith("ms") for q in quantiles)

            live = wait_until(showing_quantiles, timeout=5)
            time.sleep(1.0)  # a few more polls for the charts
            ARTIFACTS.mkdir(exist_ok=True)
            assert driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
            assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
            sender.join(30)
            assert live, "the page never showed p50 and p99 while requests were sent"
            assert statuses == [200] * API_REQUESTS
            api_requests = 'tr[data-route="api"] td[data-field="requests"]'
            assert wait_until(lambda: text(driver, api_requests) == str(API_REQUESTS)), text(
                driver, "#status"
            )
            assert text(driver, "#status") == "live"
            site = 'tr[data-route="site"] td[data-field="{}"]'
            assert text(driver, site.format("requests")) == str(SITE_OK + SITE_ERRORS)
            assert text(driver, site.format("errors")) == str(SITE_ERRORS)
            assert text(driver, 'tr[data-service="api"] td[data-field="requests"]') == str(
                API_REQUESTS
            )
            assert text(driver, 'tr[data-service="web"] td[data-field="errors"]') == str(
                SITE_ERRORS
            )
            web_health = f'tr[data-instance="web/{web.address}"] td[data-field="health"]'
            assert wait_until(lambda: text(driver, web_health) == "healthy")
            api_health = f'tr[data-instance="api/{api.address}"] td[data-field="health"]'
            assert text(driver, api_health) == "unchecked"
            refused = 'tr[data-rejection="tight/tight/rate_limited"] td[data-field="{}"]'
            assert text(driver, refused.format("count")) == "2"
            assert text(driver, refused.format("kind")) == "rate_limit"
            assert text(driver, "#workers") == "1"
            assert text(driver, "#reloads-success") == "0"
            assert text(driver, "#dropped-access-log") == text(driver, "#dropped-spans") == "0"
            for row in ('tr[data-route="api"]', 'tr[data-service="api"]'):
                lines = driver.execute_script(
                    "return document.querySelectorAll(arguments[0] + ' svg.chart polyline').length",
                    row,
                )
                assert lines == 2, row
            # The api service's second instance refuses connections: the outlier detection ejects
            # it (again when an ejection ends while traffic still flows); the page shows what
            # /services says.
            refusing = g.config.services["api"].instances[1].address
            instance = f'tr[data-instance="api/{refusing}"] td[data-field="{{}}"]'

            def ejections_shown() -> tuple[str, str] | None:
                services = admin_get(g.admin_port, "/services", token=TOKEN).json()["services"]
                api_service = next(s for s in services if s["name"] == "api")
                state = api_service["instances"][1]
                expected = ("ejected" if state["ejected"] else "no", str(state["ejections"]))
                shown = (
                    text(driver, instance.format("ejected")),
                    text(driver, instance.format("ejections")),
                )
                return expected if shown == expected and state["ejections"] >= 1 else None

            assert wait_until(ejections_shown), text(driver, "#instances")
            assert console_errors(driver) == []

            # An accepted reload appears in the list of recent reloads.
            assert text(driver, '#reload-events td[data-field="result"]') is None
            g.call(g.gateway.reload, g.config)
            result = '#reload-events td[data-field="result"]'
            assert wait_until(lambda: text(driver, result) == "applied")
            assert text(driver, "#reloads-success") == "1"

            # The page's computation and portway.admin.rates agree on two real answers.
            first = admin_get(g.admin_port, "/stats", token=TOKEN).json()
            for i in range(5):
                request(g.port, "GET", f"/api/more/{i}")
            second = admin_get(g.admin_port, "/stats", token=TOKEN).json()
            page = driver.execute_script(
                "return liveNumbers(arguments[0], arguments[1])", first, second
            )
            python = live_numbers(first, second)
            assert page["seconds"] == pytest.approx(python.seconds)
            for kind in ("routes", "services"):
                for js, py in zip(page[kind], getattr(python, kind), strict=True):
                    assert (js["name"], js["requests"], js["errors"]) == (
                        py.name,
                        py.requests,
                        py.errors,
                    )
                    for field, value in (
                        ("rps", py.requests_per_second),
                        ("eps", py.errors_per_second),
                        ("p50", py.p50),
                        ("p99", py.p99),
                    ):
                        assert js[field] == (None if value is None else pytest.approx(value))
            assert console_errors(driver) == []


def test_the_dashboard_shows_access_log_lines_dropped(tmp_path: Path) -> None:
    """The access log's sink is a FIFO nobody reads: lines are dropped, and the page shows as
    many as ``/stats`` counts, marked bad; spans (no tracing here) stay 0."""
    with (
        gateway_with_a_stuck_access_log(tmp_path) as (g, reader),
        chromium(tmp_path / "profile") as driver,
    ):
        sent = send_until_lines_are_dropped(g)
        dropped = settled_drop_count(g)
        assert dropped

        def counted() -> dict[str, int] | None:
            counts: dict[str, int] = admin_get(g.admin_port, "/stats").json()["telemetry_dropped"]
            return counts if counts["access_log"] == dropped else None

        assert wait_until(counted) == {"access_log": dropped, "spans": 0}
        driver.get(f"http://127.0.0.1:{g.admin_port}/dashboard#interval=0.3")
        shown = wait_until(lambda: text(driver, "#dropped-access-log") == str(dropped))
        assert shown, (text(driver, "#dropped-access-log"), dropped, text(driver, "#status"))
        classes = driver.execute_script(
            "return ['dropped-access-log', 'dropped-spans']"
            ".map((id) => document.getElementById(id).className)"
        )
        assert classes == ["bad", ""]
        assert text(driver, "#dropped-spans") == "0"
        assert console_errors(driver) == []
        # Read what the writer holds, so that it finishes before the gateway stops.
        assert drain_lines(reader, expected_lines=sent - dropped) == sent - dropped


def test_the_dashboard_says_why_a_reload_was_refused(tmp_path: Path) -> None:
    """Against ``portway run``, whose supervisor refuses an invalid file on SIGHUP: the page counts
    the failure and shows the reason (file, line) under the recent reloads, newest first."""
    config_text = (
        'listeners: [{address: "127.0.0.1:0"}]\n'
        'services:\n  web: {instances: ["%s"]}\n'
        "routes:\n  - {name: site, path: /, service: web}\n"
        "server: {access_log: {enabled: false}}\n"
    )
    with (
        Backend("web") as web,
        run_portway(config_text % web.address) as gw,
        chromium(tmp_path / "profile") as driver,
    ):
        gw.proc.send_signal(signal.SIGHUP)  # the same file: accepted
        gw.wait_for_stderr(r"SIGHUP: config is valid")
        gw.config_path.write_text("routes: [")
        gw.proc.send_signal(signal.SIGHUP)
        gw.wait_for_stderr(r"SIGHUP: the new config is invalid")
        driver.get(f"http://127.0.0.1:{gw.admin_port}/#interval=0.3")
        assert wait_until(lambda: text(driver, "#reloads-failure") == "1"), text(driver, "#status")
        assert text(driver, "#reloads-success") == "1"
        results = driver.execute_script(
            "return [...document.querySelectorAll('#reload-events td[data-field=\"result\"]')]"
            ".map((cell) => cell.textContent)"
        )
        assert results == ["refused", "applied"]
        why = text(driver, '#reload-events td[data-field="error"]') or ""
        assert why.startswith(f"{gw.config_path}:") and "YAML" in why, why
        assert console_errors(driver) == []
