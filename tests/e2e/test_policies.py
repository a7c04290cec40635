"""Policies through a real gateway: API keys, local rate limits, their order, reloads and counts.

Rate-limit headers follow draft-ietf-httpapi-ratelimit-headers-09 (``RateLimit-Policy``,
``RateLimit``); 429 and ``Retry-After`` follow RFC 6585 §4 and RFC 9110 §10.2.3.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.gateway import GatewayThread
from tests.support.backends import Backend
from tests.support.client import KeepAliveClient, request

ALICE_KEY = "alice-0123456789abcdef"
BOB_KEY = "bob-fedcba9876543210"


def config(address: str, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "services": {"api": {"instances": [address]}},
        "policies": {
            "keys": {
                "api_key": {
                    "keys": [
                        {"consumer": "alice", "key": ALICE_KEY},
                        {
                            "consumer": "bob",
                            "key_sha256": hashlib.sha256(BOB_KEY.encode()).hexdigest(),
                        },
                    ],
                    "query": "api_key",
                }
            },
            "per-consumer": {"rate_limit": {"requests": 3, "per": "1m", "key": "consumer"}},
            "per-ip": {"rate_limit": {"requests": 5, "per": "1m"}},
        },
        "routes": [
            {"name": "open", "path": "/open", "service": "api", "policies": ["per-ip"]},
            # Listed rate limit first: authentication still runs first.
            {"name": "api", "path": "/api", "service": "api", "policies": ["per-consumer", "keys"]},
            {"name": "free", "path": "/", "service": "api"},
        ],
    }
    base.update(overrides)
    return base


@pytest.fixture
def gateway(backend: Backend) -> Iterator[GatewayThread]:
    with GatewayThread(config(backend.address)) as g:
        yield g


def test_api_key_in_header_reaches_backend_as_consumer_without_the_key(
    gateway: GatewayThread,
) -> None:
    response = request(gateway.port, "GET", "/api/x", headers={"X-API-Key": ALICE_KEY})
    assert response.status == 200
    seen = response.json()["headers"]
    assert seen["x-portway-consumer"] == "alice"
    assert "x-api-key" not in seen  # strip_credentials defaults to true


def test_api_key_by_digest_and_in_query(gateway: GatewayThread) -> None:
    response = request(gateway.port, "GET", f"/api/x?api_key={BOB_KEY}")
    assert response.status == 200
    assert response.json()["headers"]["x-portway-consumer"] == "bob"


def test_missing_and_wrong_keys_are_401_with_a_cause_and_counted(gateway: GatewayThread) -> None:
    missing = request(gateway.port, "GET", "/api/x")
    assert missing.status == 401
    assert missing.header("portway-error") == "missing_credentials"
    assert b"x-api-key header or the api_key query parameter" in missing.body
    wrong = request(gateway.port, "GET", "/api/x", headers={"x-api-key": "nope-nope-nope-nope"})
    assert wrong.status == 401
    assert wrong.header("portway-error") == "invalid_credentials"
    counted = gateway.policy_rejections()
    assert counted[("api", "keys", "api_key", "missing_credentials")] == 1
    assert counted[("api", "keys", "api_key", "invalid_credentials")] == 1
    # A refused request spends no quota: alice still has all 3.
    for _ in range(3):
        ok = request(gateway.port, "GET", "/api/x", headers={"x-api-key": ALICE_KEY})
        assert ok.status == 200


def test_forged_consumer_header_never_reaches_the_backend(gateway: GatewayThread) -> None:
    response = request(gateway.port, "GET", "/free", headers={"X-Portway-Consumer": "admin"})
    assert response.status == 200
    assert "x-portway-consumer" not in response.json()["headers"]
    response = request(
        gateway.port,
        "GET",
        "/api/x",
        headers={"X-Portway-Consumer": "admin", "x-api-key": ALICE_KEY},
    )
    assert response.json()["headers"]["x-portway-consumer"] == "alice"


def test_rate_limit_per_consumer_with_ratelimit_headers(gateway: GatewayThread) -> None:
    remaining = []
    with KeepAliveClient(gateway.port) as client:
        for _ in range(3):
            response = client.request("GET", "/api/x", headers={"x-api-key": ALICE_KEY})
            assert response.status == 200
            assert response.header("ratelimit-policy") == '"per-consumer";q=3;w=60'
            match = re.fullmatch(r'"per-consumer";r=(\d+);t=(\d+)', response.header("ratelimit"))
            assert match is not None, response.header("ratelimit")
            remaining.append(int(match.group(1)))
            assert 0 < int(match.group(2)) <= 60
        assert remaining == [2, 1, 0]
        limited = client.request("GET", "/api/x", headers={"x-api-key": ALICE_KEY})
    assert limited.status == 429
    assert limited.header("portway-error") == "rate_limited"
    retry_after = int(limited.header("retry-after") or "0")
    # A sliding window: the 3 requests of this window still weigh on the next one, so the wait
    # may pass the window's end (at most two windows).
    assert 1 <= retry_after <= 120
    assert limited.header("ratelimit") == f'"per-consumer";r=0;t={retry_after}'
    # Bob has his own quota.
    bob = request(gateway.port, "GET", "/api/x", headers={"x-api-key": BOB_KEY})
    assert bob.status == 200
    assert gateway.policy_rejections()[("api", "per-consumer", "rate_limit", "rate_limited")] == 1


def test_rate_limit_per_client_ip_and_unlimited_routes(gateway: GatewayThread) -> None:
    statuses = [request(gateway.port, "GET", "/open").status for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2
    # A route without policies is not limited and gets no rate-limit headers.
    free = request(gateway.port, "GET", "/free")
    assert free.status == 200 and free.header("ratelimit") is None


def test_rejection_is_counted_under_its_route_in_request_metrics(gateway: GatewayThread) -> None:
    request(gateway.port, "GET", "/api/x")
    routes = gateway.call(lambda: dict(gateway.gateway.ctx.stats.routes))
    counters = routes[("api", "api")]
    assert counters.requests["GET"] == {401: 1}


def test_reload_keeps_counts_of_an_unchanged_policy_and_resets_a_changed_one(
    gateway: GatewayThread, backend: Backend
) -> None:
    for _ in range(5):
        assert request(gateway.port, "GET", "/open").status == 200
    assert request(gateway.port, "GET", "/open").status == 429
    # Unrelated change (a new route): the per-ip window is carried over.
    changed = config(backend.address)
    changed["routes"].insert(0, {"name": "extra", "path": "/extra", "service": "api"})
    gateway.reload(changed)
    assert request(gateway.port, "GET", "/open").status == 429
    # The limit itself changes: a new window.
    raised = config(backend.address)
    raised["policies"]["per-ip"]["rate_limit"]["requests"] = 10
    gateway.reload(raised)
    assert request(gateway.port, "GET", "/open").status == 200


def test_policy_on_a_head_request_answers_without_a_body(gateway: GatewayThread) -> None:
    response = request(gateway.port, "HEAD", "/api/x")
    assert response.status == 401
    assert response.body == b""


def test_admin_shows_rate_limit_state_and_rejection_metrics(backend: Backend) -> None:
    from tests.e2e.test_admin import check_against_openapi
    from tests.support.admin import admin_get, metric_value, promtool_check_metrics, wait_until

    with GatewayThread(config(backend.address), admin=True) as g:
        for _ in range(7):
            request(g.port, "GET", "/open")  # 5 admitted, 2 limited, all from 127.0.0.1
        for _ in range(2):
            request(g.port, "GET", "/api/x", headers={"x-api-key": ALICE_KEY})
        request(g.port, "GET", "/api/x", headers={"x-api-key": BOB_KEY})
        request(g.port, "GET", "/api/x")  # missing key

        def limits() -> dict[str, Any] | None:
            found = admin_get(g.admin_port, "/ratelimits")
            by_name = {p["name"]: p for p in found.json()["rate_limits"]}
            ip = by_name.get("per-ip")
            return by_name if ip and ip["top"] and ip["top"][0]["used"] >= 5 else None

        by_name = wait_until(limits)
        assert by_name, "the worker's report never showed the per-ip window"
        ip = by_name["per-ip"]
        assert (ip["store"], ip["limit"], ip["window_seconds"], ip["key"]) == (
            "local",
            5,
            60.0,
            "client_ip",
        )
        assert ip["routes"] == ["open"] and ip["workers"] == 1 and ip["keys"] == 1
        assert ip["top"][0]["key"] == "127.0.0.1"
        assert 4.9 <= ip["top"][0]["used"] <= 5.0 and ip["top"][0]["remaining"] == 0
        consumer = by_name["per-consumer"]
        assert consumer["routes"] == ["api"] and consumer["keys"] == 2
        assert [(r["key"], r["remaining"]) for r in consumer["top"]] == [("alice", 1), ("bob", 2)]
        assert "redis" not in consumer
        check_against_openapi(
            admin_get(g.admin_port, "/openapi.json").json(),
            "/ratelimits",
            admin_get(g.admin_port, "/ratelimits"),
        )

        text = admin_get(g.admin_port, "/metrics").text
        rejected = "portway_policy_rejections_total"
        assert (
            metric_value(
                text,
                rejected,
                route="open",
                policy="per-ip",
                kind="rate_limit",
                reason="rate_limited",
            )
            == 2.0
        )
        assert (
            metric_value(
                text,
                rejected,
                route="api",
                policy="keys",
                kind="api_key",
                reason="missing_credentials",
            )
            == 1.0
        )
        assert metric_value(text, "portway_rate_limit_keys", policy="per-consumer") == 2.0
        assert (
            metric_value(
                text,
                "portway_requests_total",
                route="open",
                service="api",
                method="GET",
                status_class="4xx",
            )
            == 2.0
        )
        checked = promtool_check_metrics(text)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_access_log_names_the_consumer_and_trace_and_never_the_key(
    backend: Backend, tmp_path: Path
) -> None:
    from tests.e2e.test_access_log_and_stats import read_lines

    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    for log_format in ("json", "common"):
        log = tmp_path / f"{log_format}.log"
        logged = config(
            backend.address, server={"access_log": {"path": str(log), "format": log_format}}
        )
        with GatewayThread(logged) as g:
            request(
                g.port,
                "GET",
                "/api/x",
                headers={
                    "x-api-key": ALICE_KEY,
                    "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
                },
            )
            request(g.port, "GET", f"/api/y?api_key={BOB_KEY}")
            request(g.port, "GET", "/api/z")
            lines = read_lines(log, 3)
        text = "\n".join(lines)
        assert ALICE_KEY not in text and BOB_KEY not in text
        if log_format == "json":
            alice, bob, anonymous = (json.loads(line) for line in lines)
            assert (alice["consumer"], alice["trace_id"], alice["status"]) == (
                "alice",
                trace_id,
                200,
            )
            assert (bob["consumer"], bob["path"]) == ("bob", "/api/y")
            assert re.fullmatch(r"[0-9a-f]{32}", bob["trace_id"]) and bob["trace_id"] != trace_id
            assert (anonymous["consumer"], anonymous["status"]) == ("", 401)
            assert anonymous["cause"] == "missing_credentials" and anonymous["route"] == "api"
        else:
            # Common Log Format: the third field is the authenticated user.
            assert lines[0].startswith("127.0.0.1 - alice [")
            assert lines[2].startswith("127.0.0.1 - - [") and '" 401 ' in lines[2]


def test_a_policy_that_cannot_be_built_closes_its_routes_only(
    backend: Backend, tmp_path: Path
) -> None:
    # Validation reads key files; one removed between validation and a worker's build must not
    # leave its routes open, nor take the other routes down.
    broken = config(backend.address)
    broken["policies"]["tokens"] = {
        "jwt": {"algorithms": ["RS256"], "public_key_file": str(tmp_path / "gone.pem")}
    }
    broken["routes"].insert(
        0, {"name": "jwt", "path": "/jwt", "service": "api", "policies": ["tokens"]}
    )
    with GatewayThread(broken) as g:
        closed = request(g.port, "GET", "/jwt/x", headers={"authorization": "Bearer a.b.c"})
        assert closed.status == 503
        assert closed.header("portway-error") == "policy_unavailable"
        assert b"gone.pem" not in closed.body  # the reason is logged, not told to clients
        assert request(g.port, "GET", "/free").status == 200
        assert g.policy_rejections()[("jwt", "tokens", "jwt", "policy_unavailable")] == 1


def test_ip_filter_and_rate_limits_see_the_client_behind_trusted_proxies(
    backend: Backend, tmp_path: Path
) -> None:
    from tests.e2e.test_access_log_and_stats import read_lines

    log = tmp_path / "access.log"
    behind = config(
        backend.address,
        server={"trusted_proxies": ["127.0.0.0/8"], "access_log": {"path": str(log)}},
    )
    behind["policies"]["office"] = {"ip_filter": {"allow": ["198.51.100.0/24"]}}
    behind["routes"].insert(
        0, {"name": "office", "path": "/office", "service": "api", "policies": ["office", "per-ip"]}
    )
    with GatewayThread(behind) as g:

        def via(client: str, path: str = "/office") -> int:
            return request(g.port, "GET", path, headers={"x-forwarded-for": client}).status

        assert via("198.51.100.7") == 200
        # A client's own claim left of it is not believed: the proxy saw 203.0.113.9.
        assert via("198.51.100.7, 203.0.113.9") == 403
        assert request(g.port, "GET", "/office").status == 403  # 127.0.0.1 itself
        # per-ip (5 per minute) counts each client behind the proxy on its own.
        assert [via("198.51.100.8") for _ in range(6)] == [200] * 5 + [429]
        assert via("198.51.100.9") == 200
        lines = read_lines(log, 10)
        assert g.policy_rejections()[("office", "office", "ip_filter", "address_refused")] == 2
    logged = [json.loads(line)["client_ip"] for line in lines]
    assert logged[:3] == ["198.51.100.7", "203.0.113.9", "127.0.0.1"]
    # Not trusted: the header is only the client's say-so.
    with GatewayThread(config(backend.address)) as g:
        statuses = [
            request(g.port, "GET", "/open", headers={"x-forwarded-for": f"198.51.100.{i}"}).status
            for i in range(6)
        ]
    assert statuses == [200] * 5 + [429]
