"""The rate limits' live state summed across workers: ``/ratelimits`` and the rate-limit gauges.

Each worker reports, per rate-limit policy, the keys it tracks and its busiest keys (``used`` is
the sliding-window estimate it would decide the next request on, ``remaining`` what it would still
admit). How workers combine depends on the store: a ``local`` window is enforced by each worker on
its own, so a key's traffic is the sum over workers while what it may still send is what the
strictest worker allows; a ``redis`` estimate already includes the other workers' and replicas'
counts as last read, so the largest one is the freshest.
"""

from __future__ import annotations

from typing import Any

TOP = 20


def merge(into: dict[str, dict[str, Any]], reported: dict[str, Any]) -> None:
    """Add one worker's ``rate_limits`` report to ``into`` (policy name -> merged state)."""
    for name, state in reported.items():
        merged = into.get(name)
        if merged is None:
            merged = into[name] = {
                "store": state.get("store", "local"),
                "limit": state.get("limit"),
                "window_seconds": state.get("window_seconds"),
                "key": state.get("key"),
                "workers": 0,
                "keys": 0,
                "top": {},
            }
            if "redis" in state:
                merged["redis"] = {
                    "up": True,
                    "sync_errors": 0,
                    "last_error": None,
                    "last_sync_age_seconds": None,
                }
        merged["workers"] += 1
        merged["keys"] += int(state.get("keys", 0))
        shared = merged["store"] == "redis"
        top: dict[str, dict[str, Any]] = merged["top"]
        for row in state.get("top", ()):
            key = str(row["key"])
            have = top.get(key)
            used, remaining = float(row["used"]), int(row["remaining"])
            if have is None:
                top[key] = {"key": key, "used": used, "remaining": remaining}
            else:
                have["used"] = max(have["used"], used) if shared else have["used"] + used
                have["remaining"] = min(have["remaining"], remaining)
        redis = state.get("redis")
        if redis is not None and "redis" in merged:
            _merge_redis(merged["redis"], redis)


def _merge_redis(merged: dict[str, Any], redis: dict[str, Any]) -> None:
    merged["up"] = merged["up"] and bool(redis.get("up"))
    merged["sync_errors"] += int(redis.get("sync_errors", 0))
    if redis.get("last_error"):
        merged["last_error"] = redis["last_error"]
    age = redis.get("last_sync_age_seconds")
    if age is not None:
        have = merged["last_sync_age_seconds"]
        merged["last_sync_age_seconds"] = max(have, float(age)) if have is not None else age


def rate_limits_json(
    merged: dict[str, dict[str, Any]], routes: dict[str, list[str]]
) -> dict[str, Any]:
    """The ``/ratelimits`` document: each policy's settings, the routes applying it, its keys and
    its busiest keys (most used first)."""
    policies = []
    for name in sorted(merged):
        state = merged[name]
        top = sorted(state["top"].values(), key=lambda r: (-r["used"], r["key"]))[:TOP]
        policies.append(
            {
                **{k: v for k, v in state.items() if k != "top"},
                "name": name,
                "routes": routes.get(name, []),
                "top": [{**row, "used": round(row["used"], 2)} for row in top],
            }
        )
    return {"rate_limits": policies}
