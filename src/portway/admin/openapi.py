"""The OpenAPI 3.1 document of the admin API (``/openapi.json``).

Built, not written by hand, where it can be: the ``Config`` schema comes from the pydantic model
the loader validates with, so the document cannot drift from what ``/config`` returns. Security is
declared only when a token is configured, since only then is it required.
"""

from __future__ import annotations

from typing import Any

from portway.admin.openapi_schemas import REF, SCHEMAS, STRING, ref
from portway.config.model import Config


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref(schema)}}}


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": STRING}}}


def _get(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": responses, **extra}}


def _asset(summary: str, media_type: str) -> dict[str, Any]:
    """A file of the dashboard: served without the token (it holds no data; a browser opening
    the page cannot send a header), hence ``security: []`` whatever the document's default."""
    content = {media_type: {"schema": STRING}}
    return _get(summary, {"200": {"description": "The file", "content": content}}, security=[])


_PAGE = "The dashboard: a page that polls `/stats` (the token from the URL fragment `#token=`)."


def openapi_document(token_required: bool) -> dict[str, Any]:
    config_schema = Config.model_json_schema(mode="serialization", ref_template=REF)
    schemas = {**SCHEMAS, **config_schema.pop("$defs", {}), "Config": config_schema}
    paths: dict[str, Any] = {
        "/healthz": _get(
            "Liveness: 200 once the admin API serves.", {"200": _json("Health", "Up")}
        ),
        "/readyz": _get(
            "Readiness: 200 only when every worker serves the current config.",
            {"200": _json("Readiness", "Ready"), "503": _json("Readiness", "Not ready")},
        ),
        "/config": _get(
            "The config being served (the admin token redacted).",
            {"200": _json("Config", "The config")},
        ),
        "/routes": _get(
            "The compiled routing table, per host, in the order rules are tried.",
            {
                "200": {
                    "description": "The table",
                    "content": {
                        "application/json": {"schema": ref("Routes")},
                        "text/plain": {"schema": STRING},
                    },
                }
            },
            parameters=[
                {
                    "name": "format",
                    "in": "query",
                    "required": False,
                    "schema": {"enum": ["json", "text"], "default": "json"},
                    "description": "`text`: the table as `portway routes` prints it.",
                }
            ],
        ),
        "/services": _get(
            "Services with their instances, health and ejections.",
            {"200": _json("Services", "The services")},
        ),
        "/certificates": _get(
            "Every certificate the HTTPS listeners serve, soonest expiry first.",
            {"200": _json("Certificates", "The certificates")},
        ),
        "/ratelimits": _get(
            "Rate-limit policies: settings, the routes applying them, keys tracked, the busiest "
            "keys and, for `store: redis`, the state of the Redis sync.",
            {"200": _json("RateLimits", "The rate limits")},
        ),
        "/stats": _get(
            "Cumulative counts per route and service for live views (the dashboard, `portway "
            "top`): a client derives rates and quantiles from two successive answers.",
            {"200": _json("Stats", "The counts")},
        ),
        "/metrics": _get(
            "Prometheus metrics, summed across worker processes.",
            {"200": _text("Prometheus text format (OpenMetrics when the Accept header asks)")},
        ),
        "/openapi.json": _get(
            "This document.",
            {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
        ),
        "/": _asset(_PAGE, "text/html"),
        "/dashboard": _asset(_PAGE, "text/html"),
        "/dashboard/dashboard.js": _asset("The dashboard's script.", "text/javascript"),
        "/dashboard/dashboard.css": _asset("The dashboard's style sheet.", "text/css"),
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Portway admin API",
            "version": "1",
            "description": "Health, configuration, routes, services, certificates, rate limits, "
            "metrics and the dashboard of a Portway gateway, on its own listener "
            "(`admin.address`).",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if token_required:
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "`admin.token`"}
        }
        document["security"] = [{"bearer": []}]
        unauthorized = {"description": "Missing or wrong bearer token"}
        for item in paths.values():
            if item["get"].get("security") != []:
                item["get"]["responses"]["401"] = unauthorized
    return document
