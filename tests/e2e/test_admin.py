"""The admin API served by a single-process gateway (``GatewayThread(admin=True)``), over sockets.

Every endpoint is checked for its values, and every JSON answer against the schema the OpenAPI
document declares for it (the document itself is checked by openapi-spec-validator).
"""

from __future__ import annotations

import time
from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate as validate_openapi

from portway.admin.server import ASSETS, ENDPOINTS
from portway.config.model import Config
from portway.observability.stats import DURATION_BUCKETS
from portway.policies.basic_auth import hash_password
from tests.e2e.gateway import GatewayThread
from tests.support.admin import AdminResponse, admin_get, metric_value, wait_until
from tests.support.backends import Backend, refused_port
from tests.support.client import request


def config(web: str, api: str, **extra: Any) -> dict[str, Any]:
    return {
        "services": {
            "web": {"instances": [web]},
            "api": {
                "instances": [api, {"address": f"127.0.0.1:{refused_port()}", "weight": 3}],
                "algorithm": "round_robin",
            },
        },
        "routes": [
            {"name": "api", "hosts": ["test.local"], "path": "/api", "service": "api"},
            {
                "name": "exact",
                "hosts": ["test.local"],
                "path": "/api/v1",
                "path_type": "exact",
                "service": "web",
            },
            {"name": "posts", "path": "/", "methods": ["POST"], "service": "web"},
            {"name": "site", "path": "/", "service": "web"},
        ],
        **extra,
    }


def check_against_openapi(document: dict[str, Any], path: str, response: AdminResponse) -> None:
    """``response`` matches the schema the document declares for ``path`` and its status."""
    declared = document["paths"][path]["get"]["responses"][str(response.status)]
    schema = declared["content"]["application/json"]["schema"]
    # The component schemas resolve against the document, as an OpenAPI tool resolves them.
    jsonschema.validate(response.json(), {**schema, "components": document["components"]})


def test_health_ready_config_routes_services_and_openapi() -> None:
    with (
        Backend("web") as web,
        Backend("api") as api,
        GatewayThread(config(web.address, api.address), admin=True) as g,
    ):
        port = g.admin_port
        assert port and port != g.port
        document = admin_get(port, "/openapi.json").json()
        validate_openapi(document)
        assert document["openapi"] == "3.1.0" and "security" not in document
        assert set(document["paths"]) == set(ENDPOINTS) | set(ASSETS)
        assert set(ENDPOINTS) == {
            "/healthz",
            "/readyz",
            "/config",
            "/routes",
            "/services",
            "/certificates",
            "/ratelimits",
            "/stats",
            "/metrics",
            "/openapi.json",
        }

        health = admin_get(port, "/healthz")
        assert (health.status, health.json()) == (200, {"status": "ok"})
        check_against_openapi(document, "/healthz", health)

        ready = admin_get(port, "/readyz")
        assert ready.status == 200, ready.text
        assert ready.json()["ready"] is True and ready.json()["workers"][0]["current_config"]
        check_against_openapi(document, "/readyz", ready)

        shown = admin_get(port, "/config")
        assert shown.json() == g.config.model_dump(mode="json")
        assert Config.model_validate(shown.json()) == g.config  # the whole config, loadable
        check_against_openapi(document, "/config", shown)

        routes = admin_get(port, "/routes")
        check_against_openapi(document, "/routes", routes)
        tables = {t["host"]: [r["name"] for r in t["routes"]] for t in routes.json()["host_tables"]}
        assert tables == {"test.local": ["exact", "api"], "*": ["posts", "site"]}
        site = routes.json()["host_tables"][1]["routes"][0]
        assert site == {
            "name": "posts",
            "index": 2,
            "hosts": [],
            "path_type": "prefix",
            "path": "/",
            "matchers": ["method in {POST}"],
            "service": "web",
            "action": None,
        }
        text = admin_get(port, "/routes?format=text")
        assert text.headers["content-type"].startswith("text/plain")
        assert text.text.splitlines() == [
            "host table test.local:",
            "  exact:",
            "    /api/v1  -> web  [exact]",
            "  prefix (longest first):",
            "    /api  -> api  [api]",
            "host table for any host:",
            "  prefix (longest first):",
            "    /  -> web  [posts]  if method in {POST}",
            "    /  -> web  [site]",
        ]

        services = admin_get(port, "/services")
        check_against_openapi(document, "/services", services)
        by_name = {s["name"]: s for s in services.json()["services"]}
        assert [i["address"] for i in by_name["web"]["instances"]] == [web.address]
        assert [i["weight"] for i in by_name["api"]["instances"]] == [1, 3]
        assert all(
            i["health"] == "unchecked" and not i["ejected"]
            for s in by_name.values()
            for i in s["instances"]
        )


def test_an_instance_refusing_connections_shows_ejected_in_services_and_metrics() -> None:
    with (
        Backend("web") as web,
        Backend("api") as api,
        GatewayThread(config(web.address, api.address), admin=True) as g,
    ):
        refused = g.config.services["api"].instances[1].address
        for i in range(4):  # round robin reaches the refusing instance; the retry answers
            assert request(g.port, "GET", f"/api/{i}").status == 200

        services = admin_get(g.admin_port, "/services").json()["services"]
        api_service = next(s for s in services if s["name"] == "api")
        # Ejected now, and one ejection so far (a refused connect ejects at once; it lasts 5 s).
        shown = [(i["ejected"], i["ejections"]) for i in api_service["instances"]]
        assert shown == [(False, 0), (True, 1)]
        metrics = admin_get(g.admin_port, "/metrics").text
        assert f'portway_instance_ejected{{instance="{refused}",service="api"}} 1.0' in metrics
        assert f'portway_instance_ejected{{instance="{api.address}",service="api"}} 0.0' in metrics
        ejections = "portway_instance_ejections_total"
        assert metric_value(metrics, ejections, service="api", instance=refused) == 1.0
        assert metric_value(metrics, ejections, service="api", instance=api.address) == 0.0
        assert (
            'portway_requests_total{method="GET",route="api",service="api",status_class="2xx"} 4.0'
            in metrics
        )


def test_an_instance_failing_its_health_check_shows_unhealthy() -> None:
    with Backend("web") as web:
        down = f"127.0.0.1:{refused_port()}"
        cfg = config(web.address, web.address)
        cfg["services"]["web"] = {
            "instances": [web.address, down],
            "health_check": {
                "type": "tcp",
                "interval": "100ms",
                "jitter": 0,
                "unhealthy_threshold": 1,
                "healthy_threshold": 1,
            },
        }
        with GatewayThread(cfg, admin=True) as g:

            def health() -> dict[str, str]:
                services = admin_get(g.admin_port, "/services").json()["services"]
                web_service = next(s for s in services if s["name"] == "web")
                return {i["address"]: i["health"] for i in web_service["instances"]}

            assert wait_until(lambda: health()[down] == "unhealthy", timeout=5.0)
            assert health()[web.address] == "healthy"
            metrics = admin_get(g.admin_port, "/metrics").text
            assert f'portway_instance_healthy{{instance="{down}",service="web"}} 0.0' in metrics
            assert (
                f'portway_instance_healthy{{instance="{web.address}",service="web"}} 1.0' in metrics
            )


def test_a_reload_shows_in_config_routes_readiness_and_reload_metrics() -> None:
    with (
        Backend("web") as web,
        Backend("api") as api,
        GatewayThread(config(web.address, api.address), admin=True) as g,
    ):
        before = time.time()
        reloaded = config(web.address, api.address)
        reloaded["routes"] = [{"name": "only", "path": "/", "service": "web"}]
        g.reload(reloaded)
        routes = admin_get(g.admin_port, "/routes").json()["host_tables"]
        assert [[r["name"] for r in t["routes"]] for t in routes] == [["only"]]
        assert admin_get(g.admin_port, "/config").json()["routes"][0]["name"] == "only"
        ready = admin_get(g.admin_port, "/readyz").json()
        assert ready["ready"] and ready["workers"][0]["generation"] == 2
        metrics = admin_get(g.admin_port, "/metrics").text
        assert 'portway_config_reloads_total{result="success"} 1.0' in metrics
        stamp = next(
            line
            for line in metrics.splitlines()
            if line.startswith("portway_config_last_reload_success_timestamp_seconds ")
        )
        assert before <= float(stamp.split()[1]) <= time.time()


def test_a_draining_gateway_is_not_ready() -> None:
    with Backend("web") as web, Backend("api") as api:
        g = GatewayThread(config(web.address, api.address), admin=True).start()
        try:
            assert admin_get(g.admin_port, "/readyz").status == 200
            g.call(setattr, g.gateway.ctx, "draining", True)
            not_ready = admin_get(g.admin_port, "/readyz")
            assert not_ready.status == 503
            assert not_ready.json() == {"ready": False, "reason": "not serving", "workers": []}
        finally:
            g.call(setattr, g.gateway.ctx, "draining", False)
            g.stop()


TOKEN = "s3cret-admin-token"


@pytest.mark.parametrize("path", [*ENDPOINTS, "/nowhere"])
def test_every_endpoint_needs_the_token_when_one_is_set(path: str) -> None:
    with Backend("web") as web, Backend("api") as api:
        cfg = config(web.address, api.address, admin={"address": "127.0.0.1:0", "token": TOKEN})
        with GatewayThread(cfg, admin=True) as g:
            missing = admin_get(g.admin_port, path)
            assert missing.status == 401 and missing.json() == {"error": "unauthorized"}
            assert missing.headers["www-authenticate"] == 'Bearer realm="portway-admin"'
            assert admin_get(g.admin_port, path, token=TOKEN + "x").status == 401
            assert admin_get(g.admin_port, path, headers={"Authorization": TOKEN}).status == 401
            allowed = admin_get(g.admin_port, path, token=TOKEN)
            assert allowed.status == (404 if path == "/nowhere" else 200), allowed.text
            if path == "/config":  # whoever reads the config does not read the token from it
                assert allowed.json()["admin"]["token"] == "<redacted>"
                assert TOKEN not in allowed.text
            if path == "/openapi.json":
                document = allowed.json()
                validate_openapi(document)
                assert document["security"] == [{"bearer": []}]
                assert "401" in document["paths"]["/metrics"]["get"]["responses"]


def test_every_path_is_served_as_the_openapi_document_describes_it() -> None:
    """Each documented path answers 200 with a declared media type and, for JSON, the declared
    schema; it needs the token exactly when the document says so (401 listed)."""
    with Backend("web") as web, Backend("api") as api:
        cfg = config(web.address, api.address, admin={"address": "127.0.0.1:0", "token": TOKEN})
        with GatewayThread(cfg, admin=True) as g:
            assert request(g.port, "GET", "/api/1").status == 200  # something to count
            document = admin_get(g.admin_port, "/openapi.json", token=TOKEN).json()
            for path, item in document["paths"].items():
                declared = item["get"]["responses"]
                anonymous = admin_get(g.admin_port, path)
                assert anonymous.status == (401 if "401" in declared else 200), path
                served = admin_get(g.admin_port, path, token=TOKEN)
                assert served.status == 200, (path, served.text)
                media_type = served.headers["content-type"].split(";")[0]
                content = declared["200"]["content"]
                assert media_type in content, (path, media_type, list(content))
                if media_type == "application/json" and "schema" in content[media_type]:
                    check_against_openapi(document, path, served)
            # Nothing is served that the document leaves out: any other path is a 404.
            assert admin_get(g.admin_port, "/dashboard/other.js", token=TOKEN).status == 404


def test_stats_counts_requests_per_route_and_service() -> None:
    with (
        Backend("web") as web,
        Backend("api") as api,
        GatewayThread(config(web.address, api.address), admin=True) as g,
    ):
        for i in range(4):
            assert request(g.port, "GET", f"/api/{i}").status == 200
        assert request(g.port, "GET", "/status/500", host="other").status == 500
        assert request(g.port, "POST", "/", host="other").status == 200
        before = time.time()
        stats = admin_get(g.admin_port, "/stats")
        check_against_openapi(admin_get(g.admin_port, "/openapi.json").json(), "/stats", stats)
        body = stats.json()
        assert before <= body["time"] <= time.time()
        assert body["buckets"] == list(DURATION_BUCKETS)
        routes = {r["name"]: r for r in body["routes"]}
        assert list(routes) == ["api", "exact", "posts", "site"]  # config order
        assert routes["api"]["requests"] == {"1xx": 0, "2xx": 4, "3xx": 0, "4xx": 0, "5xx": 0}
        assert routes["site"]["requests"]["5xx"] == 1 and routes["posts"]["requests"]["2xx"] == 1
        assert sum(routes["exact"]["requests"].values()) == 0
        assert sum(routes["api"]["duration"]["counts"]) == 4
        assert len(routes["api"]["duration"]["counts"]) == len(DURATION_BUCKETS) + 1
        assert routes["api"]["hosts"] == ["test.local"] and routes["api"]["path"] == "/api"
        services = {s["name"]: s for s in body["services"]}
        assert services["web"]["requests"]["2xx"] == 1 and services["web"]["requests"]["5xx"] == 1
        assert sum(services["web"]["duration"]["counts"]) == 2
        assert [i["address"] for i in services["web"]["instances"]] == [web.address]
        assert body["reloads"] == {"success": 0, "failure": 0, "last_success": None, "recent": []}
        assert body["workers"] == 1 and body["connections"]["total"] == 6

        assert request(g.port, "GET", "/nothing", host="nowhere.example").status == 200
        g.reload({**config(web.address, api.address), "routes": []})
        assert request(g.port, "GET", "/nothing", host="nowhere.example").status == 404
        body = admin_get(g.admin_port, "/stats").json()
        # The old routes' counts stay (marked unconfigured); unrouted requests have their row.
        names = [(r["name"], r["configured"]) for r in body["routes"]]
        assert names == [
            ("api", False),
            ("posts", False),
            ("site", False),
            ("(no route)", False),
        ]
        assert body["routes"][-1]["requests"]["4xx"] == 1
        assert body["errors"] == {"no_route": 1}
        assert body["reloads"]["success"] == 1 and body["reloads"]["last_success"] >= before


def test_the_dashboard_is_served_from_the_package_without_the_token() -> None:
    with Backend("web") as web, Backend("api") as api:
        cfg = config(web.address, api.address, admin={"address": "127.0.0.1:0", "token": TOKEN})
        with GatewayThread(cfg, admin=True) as g:
            page = admin_get(g.admin_port, "/")
            assert page.status == 200 and page.headers["content-type"].startswith("text/html")
            assert admin_get(g.admin_port, "/dashboard").body == page.body
            assert page.headers["content-security-policy"].startswith("default-src 'self'")
            # Only relative, same-origin assets: nothing from a CDN.
            assert "http" not in page.text.replace('"http://www.w3.org', "")
            for asset, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
                served = admin_get(g.admin_port, f"/dashboard/{asset}")
                assert served.status == 200 and served.headers["content-type"].startswith(kind)
                assert f'"dashboard/{asset}"' in page.text
                assert "://" not in served.text.replace("http://www.w3.org/2000/svg", "")
            # The page holds no data; the data it polls needs the token.
            assert admin_get(g.admin_port, "/stats").status == 401


def test_config_shows_no_secret() -> None:
    """API keys, JWT secrets, the admin token and URL passwords are redacted in /config (the
    fields the model marks writeOnly, as the OpenAPI document says); nothing else changes."""
    api_key = "k" * 24
    jwt_secret = "an-hmac-secret-of-at-least-32-bytes!"
    redis_password = "redis-pass-1234"
    password_hash = hash_password("correct horse battery staple")
    with Backend("web") as web, Backend("api") as api:
        cfg = config(web.address, api.address, admin={"address": "127.0.0.1:0", "token": TOKEN})
        cfg["policies"] = {
            "keys": {"api_key": {"keys": [{"consumer": "acme", "key": api_key}]}},
            "tokens": {"jwt": {"algorithms": ["HS256"], "secret": jwt_secret}},
            "staff": {"basic_auth": {"users": [{"name": "ops", "password_hash": password_hash}]}},
        }
        cfg["redis"] = {"url": f"redis://ops:{redis_password}@127.0.0.1:6390/0"}
        with GatewayThread(cfg, admin=True) as g:
            shown = admin_get(g.admin_port, "/config", token=TOKEN)
            document = admin_get(g.admin_port, "/openapi.json", token=TOKEN).json()
    for secret in (api_key, jwt_secret, redis_password, password_hash, TOKEN):
        assert secret not in shown.text
    expected = g.config.model_dump(mode="json")
    expected["admin"]["token"] = "<redacted>"
    expected["policies"]["keys"]["api_key"]["keys"][0]["key"] = "<redacted>"
    expected["policies"]["tokens"]["jwt"]["secret"] = "<redacted>"
    expected["policies"]["staff"]["basic_auth"]["users"][0]["password_hash"] = "<redacted>"
    expected["redis"]["url"] = "redis://ops:<redacted>@127.0.0.1:6390/0"
    assert shown.json() == expected
    check_against_openapi(document, "/config", shown)
    schemas = document["components"]["schemas"]
    for model, field in (
        ("ApiKeyEntry", "key"),
        ("JwtConfig", "secret"),
        ("BasicUser", "password_hash"),
        ("AdminConfig", "token"),
    ):
        assert schemas[model]["properties"][field]["writeOnly"] is True


def test_unknown_paths_and_other_methods() -> None:
    with (
        Backend("web") as web,
        Backend("api") as api,
        GatewayThread(config(web.address, api.address), admin=True) as g,
    ):
        assert admin_get(g.admin_port, "/nope").status == 404
        posted = admin_get(g.admin_port, "/config", method="POST")
        assert posted.status == 405 and posted.headers["allow"] == "GET"


def test_without_admin_no_admin_listener_is_started() -> None:
    with (
        Backend("web") as web,
        Backend("api") as api,
        GatewayThread(config(web.address, api.address)) as g,
    ):
        assert g.admin_port == 0 and g.gateway.admin is None
