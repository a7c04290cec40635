"""The response schemas of the admin API's OpenAPI document (``openapi`` assembles it).

Written by hand where no model exists to build them from; a test validates every JSON answer of
the admin API against the schema declared for it, so they cannot drift unnoticed.
"""

from __future__ import annotations

from typing import Any

REF = "#/components/schemas/{model}"


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required if required is not None else list(properties),
    }


STRING = {"type": "string"}
STRINGS = {"type": "array", "items": STRING}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}

SCHEMAS: dict[str, Any] = {
    "Health": obj({"status": {"const": "ok"}}),
    "Readiness": obj(
        {
            "ready": BOOL,
            "reason": {**STRING, "description": "Why not ready, or `ready`."},
            "workers": {
                "type": "array",
                "items": obj(
                    {
                        "worker": INT,
                        "ready": BOOL,
                        "pid": INT,
                        "generation": INT,
                        "current_config": BOOL,
                        "report_age_seconds": {"type": "number"},
                        "requests": {**INT, "description": "Requests this process answered."},
                    },
                    ["worker", "ready"],
                ),
            },
        }
    ),
    "Route": obj(
        {
            "name": STRING,
            "index": {**INT, "description": "Position in the config's route list."},
            "hosts": STRINGS,
            "path_type": {"enum": ["exact", "prefix", "regex"]},
            "path": STRING,
            "matchers": {**STRINGS, "description": "Methods, headers and query rules."},
            "service": {"type": ["string", "null"], "description": "null: a redirect route."},
            "action": {
                "type": ["string", "null"],
                "description": "The route's rewrite or redirect, if it has one.",
            },
        }
    ),
    "Routes": obj(
        {
            "host_tables": {
                "type": "array",
                "description": "In the order hosts are tried: exact, wildcard, any host.",
                "items": obj(
                    {
                        "host": STRING,
                        "title": STRING,
                        "routes": {
                            "type": "array",
                            "description": "In the order they are tried.",
                            "items": ref("Route"),
                        },
                    }
                ),
            },
            "diagnostics": {**STRINGS, "description": "Routes skipped or unreachable, and why."},
        }
    ),
    "Instance": obj(
        {
            "address": STRING,
            "weight": INT,
            "health": {"enum": ["healthy", "unhealthy", "pending", "unchecked"]},
            "healthy": BOOL,
            "ejected": {**BOOL, "description": "Ejected by the outlier detection of any worker."},
            "ejected_by_workers": INT,
            "ejections": {
                **INT,
                "description": "Outlier ejections of the instance so far, summed over workers.",
            },
            "active_requests": INT,
        }
    ),
    "Services": obj(
        {
            "services": {
                "type": "array",
                "items": obj(
                    {
                        "name": STRING,
                        "algorithm": STRING,
                        "health_check": BOOL,
                        "retries": INT,
                        "instances": {"type": "array", "items": ref("Instance")},
                    }
                ),
            }
        }
    ),
    "RateLimits": obj(
        {
            "rate_limits": {
                "type": "array",
                "items": obj(
                    {
                        "name": STRING,
                        "store": {"enum": ["local", "redis"]},
                        "limit": INT,
                        "window_seconds": {"type": "number"},
                        "key": {
                            **STRING,
                            "description": "client_ip, consumer, route or header:<name>.",
                        },
                        "routes": STRINGS,
                        "workers": {**INT, "description": "Workers reporting this policy."},
                        "keys": {**INT, "description": "Keys tracked, summed over workers."},
                        "top": {
                            "type": "array",
                            "items": obj(
                                {
                                    "key": STRING,
                                    "used": {
                                        "type": "number",
                                        "description": "Sliding-window estimate: summed over "
                                        "workers for local, the largest for redis.",
                                    },
                                    "remaining": {
                                        **INT,
                                        "description": "What the strictest worker still admits.",
                                    },
                                }
                            ),
                        },
                        "redis": obj(
                            {
                                "up": BOOL,
                                "sync_errors": INT,
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
    "Certificates": obj(
        {
            "certificates": {
                "type": "array",
                "items": obj(
                    {
                        "listener": STRING,
                        "position": {**INT, "description": "In the listener's certificates."},
                        "hosts": {**STRINGS, "description": "SNI names it serves."},
                        "names": {**STRINGS, "description": "DNS names in the certificate."},
                        "subject": STRING,
                        "issuer": STRING,
                        "serial": STRING,
                        "not_before": {**STRING, "format": "date-time"},
                        "not_after": {**STRING, "format": "date-time"},
                        "days_left": {"type": "number"},
                        "fingerprint_sha256": STRING,
                        "source": {
                            **STRING,
                            "description": "The certificate file, or `acme` while an ACME "
                            "certificate is not issued yet (a self-signed stand-in serves).",
                        },
                        "default": BOOL,
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
    "Counts": obj(
        {
            "requests": {
                "type": "object",
                "description": "Requests answered, cumulative, by status class.",
                "properties": {c: INT for c in ("1xx", "2xx", "3xx", "4xx", "5xx")},
                "required": ["1xx", "2xx", "3xx", "4xx", "5xx"],
            },
            "duration": obj(
                {
                    "counts": {
                        "type": "array",
                        "items": INT,
                        "description": "Requests per duration bucket (not cumulative), one per "
                        "bound in `buckets` and a last one for +Inf.",
                    },
                    "sum": {"type": "number", "description": "Seconds, all requests."},
                }
            ),
        }
    ),
    "Stats": obj(
        {
            "time": {"type": "number", "description": "The server's Unix time of this answer."},
            "buckets": {
                "type": "array",
                "items": {"type": "number"},
                "description": "Upper bounds of the duration buckets, in seconds.",
            },
            "status_classes": STRINGS,
            "routes": {
                "type": "array",
                "description": "Configured routes in config order, then routes a reload removed, "
                "then `(no route)`: requests that matched none.",
                "items": {
                    "allOf": [
                        ref("Counts"),
                        obj(
                            {
                                "name": STRING,
                                "service": STRING,
                                "hosts": STRINGS,
                                "path": STRING,
                                "configured": BOOL,
                            }
                        ),
                    ]
                },
            },
            "services": {
                "type": "array",
                "items": {
                    "allOf": [
                        ref("Counts"),
                        obj(
                            {
                                "name": STRING,
                                "algorithm": STRING,
                                "health_check": BOOL,
                                "retries": INT,
                                "configured": BOOL,
                                "instances": {"type": "array", "items": ref("Instance")},
                            }
                        ),
                    ]
                },
            },
            "errors": {
                "type": "object",
                "additionalProperties": INT,
                "description": "Error answers the gateway wrote itself, by `portway-error` cause.",
            },
            "policy_rejections": {
                "type": "array",
                "description": "Requests policies refused, by route, policy, kind and reason.",
                "items": obj(
                    {
                        "route": STRING,
                        "policy": STRING,
                        "kind": STRING,
                        "reason": STRING,
                        "count": INT,
                    }
                ),
            },
            "reloads": obj(
                {
                    "success": INT,
                    "failure": INT,
                    "last_success": {
                        "type": ["number", "null"],
                        "description": "Unix time of the last successful reload; null if none.",
                    },
                    "recent": {
                        "type": "array",
                        "description": "The last reload attempts, newest first, with why a "
                        "refused one was refused (file, line, field and reason).",
                        "items": obj(
                            {
                                "time": {"type": "number"},
                                "ok": BOOL,
                                "error": {"type": ["string", "null"]},
                            }
                        ),
                    },
                }
            ),
            "connections": obj({"open": INT, "total": INT}),
            "telemetry_dropped": {
                **obj({"access_log": INT, "spans": INT}),
                "description": "Access-log lines and spans dropped because their sink could not "
                "keep up, all workers.",
            },
            "workers": {**INT, "description": "Worker processes whose counts are included."},
        }
    ),
}
