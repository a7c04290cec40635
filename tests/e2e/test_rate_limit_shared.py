"""``store: redis`` rate limits through the real CLI: two workers share one quota through a real
``redis-server``, answer 429 with the draft-09 ``RateLimit`` fields, and keep answering promptly,
without a 5xx, when Redis goes away."""

from __future__ import annotations

import math
import re
import time
from typing import Any

from tests.support.admin import admin_get, metric_value, wait_until
from tests.support.backends import Backend
from tests.support.client import request
from tests.support.processes import run_portway
from tests.support.redis_server import running_redis

LIMIT = 20
PER = 10.0
SYNC = 0.02  # seconds: short, so that the workers' views lag little behind each other
PACE = 0.015  # seconds between requests


def config_for(backend: str, redis_url: str) -> str:
    return (
        'listeners: [{address: "127.0.0.1:0"}]\n'
        f'services:\n  web: {{instances: ["{backend}"]}}\n'
        f'redis: {{url: "{redis_url}", sync_interval: 20ms, timeout: 200ms}}\n'
        "policies:\n"
        f"  shared: {{rate_limit: {{requests: {LIMIT}, per: 10s, key: client_ip, store: redis}}}}\n"
        "  roomy: {rate_limit: {requests: 1000, per: 10s, key: client_ip, store: redis}}\n"
        "routes:\n"
        "  - {path: /limited, service: web, policies: [shared]}\n"
        "  - {path: /, service: web, policies: [roomy]}\n"
    )


def wait_for_window_room(need: float) -> None:
    """Sleep into the next window when fewer than ``need`` seconds remain in this one, so that
    the requests below fall in one window (no previous window's weight to reason about)."""
    now = time.time()
    left = (math.floor(now / PER) + 1) * PER - now
    if left < need:
        time.sleep(left + 0.05)


def test_two_workers_share_one_quota_and_survive_a_redis_outage() -> None:
    with (
        running_redis() as redis,
        Backend() as backend,
        run_portway(config_for(backend.address, redis.url), workers=2) as gw,
    ):
        # Both workers hold a connection to Redis (each names it "portway").
        deadline = time.monotonic() + 5.0
        while redis.command("CLIENT", "LIST").count(b"name=portway") < 2:
            assert time.monotonic() < deadline, redis.command("CLIENT", "LIST")
            time.sleep(0.02)
        wait_for_window_room(5.0)  # both phases below (about 2 s) in one window

        # A fresh connection per request: SO_REUSEPORT spreads them over both workers.
        statuses: list[int] = []
        refused = None
        admitted_headers = []
        for i in range(60):
            answer = request(gw.port, "GET", f"/limited/{i}")
            statuses.append(answer.status)
            if answer.status == 200:
                admitted_headers.append(answer.header("ratelimit"))
            elif refused is None:
                refused = answer
            time.sleep(PACE)
        admitted = statuses.count(200)
        assert set(statuses) <= {200, 429}, statuses
        # One quota, not one per worker (40). Over it at most by what the other worker admitted
        # in two sync intervals and their duration: at this pace one or two requests (a loaded
        # machine slows the syncs down, hence the margin).
        assert LIMIT <= admitted <= LIMIT + 8, statuses
        assert statuses[-10:] == [429] * 10
        assert all(re.fullmatch(r'"shared";r=\d+;t=\d+', h or "") for h in admitted_headers), (
            admitted_headers
        )
        assert refused is not None
        retry_after = refused.header("retry-after")
        # Until the sliding estimate has room: into the next window when this one is full.
        assert retry_after is not None and 1 <= int(retry_after) <= 2 * PER
        assert refused.header("ratelimit-policy") == '"shared";q=20;w=10'
        assert re.fullmatch(r'"shared";r=0;t=\d+', refused.header("ratelimit") or "")

        # Redis holds what both workers admitted, in this window's counter.
        window = int(time.time() // PER)
        deadline = time.monotonic() + 2.0
        while redis.get_int(f"portway:rl:shared:{window}:127.0.0.1") != admitted:
            assert time.monotonic() < deadline, redis.get_int(
                f"portway:rl:shared:{window}:127.0.0.1"
            )
            time.sleep(0.02)

        # The admin process sums both workers' views: one policy, the busy key at its limit.
        def shared_state(up: bool) -> dict[str, Any] | None:
            found = admin_get(gw.admin_port, "/ratelimits").json()["rate_limits"]
            state = next(p for p in found if p["name"] == "shared")
            return state if state["redis"]["up"] is up and state["top"] else None

        def at_limit() -> dict[str, Any] | None:
            # Workers report about once a second, so the first report seen may predate the
            # burst's end: wait for reports from after it.
            state = shared_state(True)
            busiest = state["top"][0] if state else None
            ready = busiest and busiest["used"] >= LIMIT - 1 and busiest["remaining"] <= 1
            return state if ready else None

        state = wait_until(at_limit)
        assert state, admin_get(gw.admin_port, "/ratelimits").text
        assert (state["store"], state["workers"], state["routes"]) == ("redis", 2, ["route-0"])
        assert state["top"][0]["key"] == "127.0.0.1"

        def limited_count() -> float | None:
            # Each worker publishes its counts about once a second: wait for the last ones.
            text = admin_get(gw.admin_port, "/metrics").text
            assert metric_value(text, "portway_rate_limit_store_up", policy="shared") == 1.0
            count = metric_value(
                text,
                "portway_policy_rejections_total",
                route="route-0",
                policy="shared",
                kind="rate_limit",
                reason="rate_limited",
            )
            return count if count == 60 - admitted else None

        assert wait_until(limited_count), admin_get(gw.admin_port, "/metrics").text

        redis.stop()
        slowest = 0.0
        for i in range(30):
            path = f"/limited/down/{i}" if i % 2 else f"/open/{i}"
            started = time.monotonic()
            answer = request(gw.port, "GET", path, timeout=5.0)
            slowest = max(slowest, time.monotonic() - started)
            # No 5xx because of Redis: the exhausted quota stays refused (last known totals),
            # the roomy one admits (local counts).
            assert answer.status == (429 if i % 2 else 200), (path, answer.status, answer.body)
            time.sleep(0.02)
        assert slowest < 1.0, slowest
        gw.wait_for_stderr(
            r"rate limit '(shared|roomy)': redis redis://127\.0\.0\.1:\d+/0 unreachable"
        )
        down = wait_until(lambda: shared_state(False))
        assert down and down["redis"]["sync_errors"] > 0 and down["redis"]["last_error"], down
        text = admin_get(gw.admin_port, "/metrics").text
        assert metric_value(text, "portway_rate_limit_store_up", policy="shared") == 0.0
        errors = metric_value(text, "portway_rate_limit_store_errors_total", policy="shared")
        assert errors is not None and errors > 0
