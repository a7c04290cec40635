"""Cross-section rules of policies: routes name policies that exist, a rate limit keyed by consumer
sits behind authentication, a shared rate limit has a Redis to share through, a JWT policy's key
file can be read and fits its algorithms (``config.jwt_keys``)."""

from __future__ import annotations

from portway.config.jwt_keys import Issue, check_jwt_keys
from portway.config.model import Config
from portway.config.reference import FieldPath

AUTH_KINDS = frozenset({"api_key", "basic_auth", "jwt", "forward_auth"})
POLICY_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")


def check_policies(config: Config) -> list[Issue]:
    issues: list[Issue] = []
    for name, policy in config.policies.items():
        if not name or not set(name) <= POLICY_NAME_CHARS:
            # Policy names become metric labels and appear in RateLimit headers.
            issues.append(
                (
                    ("policies", name),
                    f"policy name '{name}' must be lower-case letters, digits, '.', '_' or '-'",
                )
            )
        if policy.jwt is not None:
            issues += check_jwt_keys(("policies", name, "jwt"), policy.jwt)
        limit = policy.rate_limit
        if limit is not None and limit.store == "redis" and config.redis is None:
            issues.append(
                (
                    ("policies", name, "rate_limit", "store"),
                    "store: redis needs a top-level `redis` section (its url)",
                )
            )
    defined = ", ".join(config.policies) or "none are defined"
    for index, route in enumerate(config.routes):
        seen: set[str] = set()
        kinds: set[str] = set()
        for position, name in enumerate(route.policies):
            path: FieldPath = ("routes", index, "policies", position)
            declared = config.policies.get(name)
            if declared is None:
                issues.append((path, f"unknown policy '{name}' (defined: {defined})"))
                continue
            if name in seen:
                issues.append((path, f"policy '{name}' is listed twice"))
            seen.add(name)
            kinds.add(declared.kind)
        for position, name in enumerate(route.policies):
            declared = config.policies.get(name)
            limit = declared.rate_limit if declared is not None else None
            if limit is not None and limit.key == "consumer" and not kinds & AUTH_KINDS:
                issues.append(
                    (
                        ("routes", index, "policies", position),
                        f"rate limit '{name}' counts per consumer, but this route has no "
                        "authentication policy (api_key, basic_auth, jwt or forward_auth) to name one",
                    )
                )
    return issues
