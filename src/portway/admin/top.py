"""``portway top``: the dashboard's live numbers in a terminal (rich), for a server without a browser.

Polls the admin API's ``/stats`` every ``interval`` seconds and shows, from the last two answers
(``portway.admin.rates``), per route and per service the requests, 5xx, requests/s, 5xx/s, p50 and
p99, then every instance's health and ejections, reload counts (and why the last attempt was
refused, if it was), requests refused by policies, the gateway's own errors and the access-log
lines and spans dropped because their sink could not keep up.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from portway.admin.rates import LiveNumbers, RowRates, live_numbers

TIMEOUT = 5.0


class AdminError(Exception):
    """The admin API could not be read (unreachable, refused the token, answered garbage)."""


def fetch_stats(base: str, token: str | None) -> dict[str, Any]:
    """One ``GET {base}/stats``."""
    return fetch_json(base, "/stats", token)


def fetch_json(base: str, path: str, token: str | None) -> dict[str, Any]:
    """One ``GET {base}{path}`` of the admin API."""
    url = base.rstrip("/") + path
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body
    except urllib.error.HTTPError as exc:
        hint = " (wrong or missing --token)" if exc.code == 401 else ""
        raise AdminError(f"{url}: HTTP {exc.code}{hint}") from None
    except (OSError, ValueError) as exc:
        raise AdminError(f"{url}: {exc}") from None


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.{2 if value < 0.01 else 1}f} ms"
    return f"{value:.2f} s"


def _numbers_table(title: str, rows: list[RowRates], extra: dict[str, str]) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column(title.lower().rstrip("s"))
    if extra:
        table.add_column("service")
    for name in ("requests", "5xx", "req/s", "5xx/s", "p50", "p99"):
        table.add_column(name, justify="right")
    for row in rows:
        cells = [row.name] + ([extra.get(row.name, "")] if extra else [])
        errors = Text(str(row.errors), style="bold red" if row.errors else "")
        eps = Text(_rate(row.errors_per_second), style="red" if row.errors_per_second else "")
        table.add_row(
            *cells,
            str(row.requests),
            errors,
            _rate(row.requests_per_second),
            eps,
            _seconds(row.p50),
            _seconds(row.p99),
        )
    return table


_HEALTH_STYLE = {"healthy": "green", "unhealthy": "bold red", "pending": "yellow"}


def frame(stats: dict[str, Any], live: LiveNumbers, source: str) -> RenderableType:
    """Everything ``top`` shows for one pair of answers."""
    when = datetime.fromtimestamp(float(stats["time"])).strftime("%H:%M:%S")
    interval = f"{live.seconds:.1f}s" if live.seconds is not None else "waiting for a 2nd poll"
    connections = stats["connections"]
    header = Text(
        f"portway top  {source}  at {when}  interval {interval}  workers {stats['workers']}  "
        f"connections {connections['open']} open / {connections['total']} total",
        style="bold",
    )
    services = {r["name"]: r["service"] for r in stats["routes"]}
    routes = _numbers_table("Routes", live.routes, services)
    by_service = _numbers_table("Services", live.services, {})
    instances = Table(title="Instances", title_justify="left")
    numeric = ("weight", "ejections", "in flight")
    for name in ("service", "instance", "weight", "health", "ejected", "ejections", "in flight"):
        instances.add_column(name, justify="right" if name in numeric else "left")
    for service in stats["services"]:
        for instance in service["instances"]:
            health = instance["health"]
            instances.add_row(
                service["name"],
                instance["address"],
                str(instance["weight"]),
                Text(health, style=_HEALTH_STYLE.get(health, "dim")),
                Text("ejected", style="bold red") if instance["ejected"] else "no",
                str(instance["ejections"]),
                str(instance["active_requests"]),
            )
    reloads = stats["reloads"]
    last = reloads["last_success"]
    footer = Text(
        f"reloads: {reloads['success']} succeeded, {reloads['failure']} failed, last success "
        + (_when(last) if last else "never")
    )
    recent = reloads["recent"]
    if recent and not recent[0]["ok"]:  # the newest attempt was refused: say why, briefly
        why = (recent[0]["error"] or "").strip().splitlines()
        footer.append(
            f"; last attempt refused at {_when(recent[0]['time'])}: {why[0] if why else '?'}",
            style="red",
        )
    refused = ", ".join(
        f"{r['route']}/{r['policy']} {r['reason']} {r['count']}" for r in stats["policy_rejections"]
    )
    errors = stats["errors"]
    causes = ", ".join(f"{cause} {count}" for cause, count in errors.items()) or "none"
    dropped = stats["telemetry_dropped"]
    lost = Text(
        f"telemetry dropped (sink too slow): access log {dropped['access_log']}, "
        f"spans {dropped['spans']}",
        style="red" if dropped["access_log"] or dropped["spans"] else "",
    )
    return Group(
        header,
        routes,
        by_service,
        instances,
        footer,
        Text(f"refused by policies: {refused or 'none'}"),
        Text(f"gateway errors: {causes}"),
        lost,
    )


def _when(unix: float) -> str:
    return datetime.fromtimestamp(float(unix)).strftime("%Y-%m-%d %H:%M:%S")


def run_top(
    base: str,
    token: str | None,
    interval: float,
    *,
    once: bool,
    console: Console,
) -> int:
    """``--once``: two polls ``interval`` apart, one frame printed, exit code 0 (1 if unreadable).
    Otherwise a live view until Ctrl-C, which exits 0; a failed poll is shown and retried."""
    if once:
        try:
            first = fetch_stats(base, token)
            time.sleep(interval)
            second = fetch_stats(base, token)
        except AdminError as exc:
            console.print(f"portway top: {exc}", style="red", markup=False)
            return 1
        console.print(frame(second, live_numbers(first, second), base))
        return 0
    previous: dict[str, Any] | None = None
    try:
        with Live(Text("portway top: first poll…"), console=console, auto_refresh=False) as view:
            while True:
                try:
                    current = fetch_stats(base, token)
                except AdminError as exc:
                    view.update(Text(f"portway top: {exc}; retrying", style="red"), refresh=True)
                else:
                    view.update(frame(current, live_numbers(previous, current), base), refresh=True)
                    previous = current
                time.sleep(interval)
    except KeyboardInterrupt:
        return 0
