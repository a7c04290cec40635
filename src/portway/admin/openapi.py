"""The OpenAPI 3.1 document of the admin API (``/openapi.json``).

Built, not written by hand, where it can be: the ``Config`` schema comes from the pydantic model
the loader validates with, so the document cannot drift from what ``/config`` returns. Security is
declared only when a token is configured, since only then is it required.
"""

from __future__ import annotations

from typing import Any

from portway.config.model import Config

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required if required is not None else list(properties),
    }


_STRING = {"type": "string"}
_STRINGS = {"type": "array", "items": _STRING}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}

_SCHEMAS: dict[str, Any] = {
    "Health": _object({"status": {"const": "ok"}}),
    "Readiness": _object(
        {
            "ready": _BOOL,
            "reason": {**_STRING, "description": "Why not ready, or `ready`."},
            "workers": {
                "type": "array",
                "items": _object(
                    {
                        "worker": _INT,
                        "ready": _BOOL,
                        "pid": _INT,
                        "generation": _INT,
                        "current_config": _BOOL,
                        "report_age_seconds": {"type": "number"},
                        "requests": {**_INT, "description": "Requests this process answered."},
                    },
                    ["worker", "ready"],
                ),
            },
        }
    ),
    "Route": _object(
        {
            "name": _STRING,
            "index": {**_INT, "description": "Position in the config's route list."},
            "hosts": _STRINGS,
            "path_type": {"enum": ["exact", "prefix", "regex"]},
            "path": _STRING,
            "matchers": {**_STRINGS, "description": "Methods, headers and query rules."},
            "service": {"type": ["string", "null"], "description": "null: a redirect route."},
            "action": {
                "type": ["string", "null"],
                "description": "The route's rewrite or redirect, if it has one.",
            },
        }
    ),
    "Routes": _object(
        {
            "host_tables": {
                "type": "array",
                "description": "In the order hosts are tried: exact, wildcard, any host.",
                "items": _object(
                    {
                        "host": _STRING,
                        "title": _STRING,
                        "routes": {
                            "type": "array",
                            "description": "In the order they are tried.",
                            "items": _ref("Route"),
                        },
                    }
                ),
            },
            "diagnostics": {**_STRINGS, "description": "Routes skipped or unreachable, and why."},
        }
    ),
    "Instance": _object(
        {
            "address": _STRING,
            "weight": _INT,
            "health": {"enum": ["healthy", "unhealthy", "pending", "unchecked"]},
            "healthy": _BOOL,
            "ejected": {**_BOOL, "description": "Ejected by the outlier detection of any worker."},
            "ejected_by_workers": _INT,
            "ejections": {
                **_INT,
                "description": "Outlier ejections of the instance so far, summed over workers.",
            },
            "active_requests": _INT,
        }
    ),
    "Services": _object(
        {
            "services": {
                "type": "array",
                "items": _object(
                    {
                        "name": _STRING,
                        "algorithm": _STRING,
                        "health_check": _BOOL,
                        "retries": _INT,
                        "instances": {"type": "array", "items": _ref("Instance")},
                    }
                ),
            }
        }
    ),
    "RateLimits": _object(
        {
            "rate_limits": {
                "type": "array",
                "items": _object(
                    {
                        "name": _STRING,
                        "store": {"enum": ["local", "redis"]},
                        "limit": _INT,
                        "window_seconds": {"type": "number"},
                        "key": {
                            **_STRING,
                            "description": "client_ip, consumer, route or header:<name>.",
                        },
                        "routes": _STRINGS,
                        "workers": {**_INT, "description": "Workers reporting this policy."},
                        "keys": {**_INT, "description": "Keys tracked, summed over workers."},
                        "top": {
                            "type": "array",
                            "items": _object(
                                {
                                    "key": _STRING,
                                    "used": {
                                        "type": "number",
                                        "description": "Sliding-window estimate: summed over "
                                        "workers for local, the largest for redis.",
                                    },
                                    "remaining": {
                                        **_INT,
                                        "description": "What the strictest worker still admits.",
                                    },
                                }
                            ),
                        },
                        "redis": _object(
                            {
                                "up": _BOOL,
                                "sync_errors": _INT,
                                "last_error": {"type": ["string", "null"]},
                                "last_sync_age_seconds": {"type": ["number", "null"]},
                            }
                        ),
                    },
                    # Only `store: redis` policies have a sync state.
                    required=[
                        "name",
                        "store",
                        "limit",
                        "window_seconds",
                        "key",
                        "routes",
                        "workers",
                        "keys",
                        "top",
                    ],
                ),
            }
        }
    ),
    "Certificates": _object(
        {
            "certificates": {
                "type": "array",
                "items": _object(
                    {
                        "listener": _STRING,
                        "position": {**_INT, "description": "In the listener's certificates."},
                        "hosts": {**_STRINGS, "description": "SNI names it serves."},
                        "names": {**_STRINGS, "description": "DNS names in the certificate."},
                        "subject": _STRING,
                        "issuer": _STRING,
                        "serial": _STRING,
                        "not_before": {**_STRING, "format": "date-time"},
                        "not_after": {**_STRING, "format": "date-time"},
                        "days_left": {"type": "number"},
                        "fingerprint_sha256": _STRING,
                        "source": {
                            **_STRING,
                            "description": "The certificate file, or `acme` while an ACME "
                            "certificate is not issued yet (a self-signed stand-in serves).",
                        },
                        "default": _BOOL,
                        "client_auth": {"enum": ["require", "request", None]},
                        "reload_error": {
                            "type": ["string", "null"],
                            "description": "Why changed files were refused (the previous "
                            "certificate serves), or null.",
                        },
                    }
                ),
            },
            "acme": {"description": "The ACME process's record of its orders, or null."},
        }
    ),
    "Counts": _object(
        {
            "requests": {
                "type": "object",
                "description": "Requests answered, cumulative, by status class.",
                "properties": {c: _INT for c in ("1xx", "2xx", "3xx", "4xx", "5xx")},
                "required": ["1xx", "2xx", "3xx", "4xx", "5xx"],
            },
            "duration": _object(
                {
                    "counts": {
                        "type": "array",
                        "items": _INT,
                        "description": "Requests per duration bucket (not cumulative), one per "
                        "bound in `buckets` and a last one for +Inf.",
                    },
                    "sum": {"type": "number", "description": "Seconds, all requests."},
                }
            ),
        }
    ),
    "Stats": _object(
        {
            "time": {"type": "number", "description": "The server's Unix time of this answer."},
            "buckets": {
                "type": "array",
                "items": {"type": "number"},
                "description": "Upper bounds of the duration buckets, in seconds.",
            },
            "status_classes": _STRINGS,
            "routes": {
                "type": "array",
                "description": "Configured routes in config order, then routes a reload removed, "
                "then `(no route)`: requests that matched none.",
                "items": {
                    "allOf": [
                        _ref("Counts"),
                        _object(
                            {
                                "name": _STRING,
                                "service": _STRING,
                                "hosts": _STRINGS,
                                "path": _STRING,
                                "configured": _BOOL,
                            }
                        ),
                    ]
                },
            },
            "services": {
                "type": "array",
                "items": {
                    "allOf": [
                        _ref("Counts"),
                        _object(
                            {
                                "name": _STRING,
                                "algorithm": _STRING,
                                "health_check": _BOOL,
                                "retries": _INT,
                                "configured": _BOOL,
                                "instances": {"type": "array", "items": _ref("Instance")},
                            }
                        ),
                    ]
                },
            },
            "errors": {
                "type": "object",
                "additionalProperties": _INT,
                "description": "Error answers the gateway wrote itself, by `portway-error` cause.",
            },
            "policy_rejections": {
                "type": "array",
                "description": "Requests policies refused, by route, policy, kind and reason.",
                "items": _object(
                    {
                        "route": _STRING,
                        "policy": _STRING,
                        "kind": _STRING,
                        "reason": _STRING,
                        "count": _INT,
                    }
                ),
            },
            "reloads": _object(
                {
                    "success": _INT,
                    "failure": _INT,
                    "last_success": {
                        "type": ["number", "null"],
                        "description": "Unix time of the last successful reload; null if none.",
                    },
                    "recent": {
                        "type": "array",
                        "description": "The last reload attempts, newest first, with why a "
                        "refused one was refused (file, line, field and reason).",
                        "items": _object(
                            {
                                "time": {"type": "number"},
                                "ok": _BOOL,
                                "error": {"type": ["string", "null"]},
                            }
                        ),
                    },
                }
            ),
            "connections": _object({"open": _INT, "total": _INT}),
            "workers": {**_INT, "description": "Worker processes whose counts are included."},
        }
    ),
}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": _STRING}}}


def _get(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": responses, **extra}}


def _asset(summary: str, media_type: str) -> dict[str, Any]:
    """A file of the dashboard: served without the token (it holds no data; a browser opening
    the page cannot send a header), hence ``security: []`` whatever the document's default."""
    content = {media_type: {"schema": _STRING}}
    return _get(summary, {"200": {"description": "The file", "content": content}}, security=[])


_PAGE = "The dashboard: a page that polls `/stats` (the token from the URL fragment `#token=`)."


def openapi_document(token_required: bool) -> dict[str, Any]:
    config_schema = Config.model_json_schema(mode="serialization", ref_template=_REF)
    schemas = {**_SCHEMAS, **config_schema.pop("$defs", {}), "Config": config_schema}
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
                        "application/json": {"schema": _ref("Routes")},
                        "text/plain": {"schema": _STRING},
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
