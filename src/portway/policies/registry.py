"""Which policy kinds exist, how each is built, and the one order they run in (with why).

A route lists policies by name in any order; they always run in phase order, then in the route's
order within a phase. Fixed here, in one table, so no config can make a rate limit count requests
that authentication would have refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from portway.config.policies import PolicyConfig, RedisConfig
from portway.policies.api_key import ApiKeyPolicy
from portway.policies.base import Policy
from portway.policies.basic_auth import BasicAuthPolicy
from portway.policies.cors import CorsPolicy
from portway.policies.forward_auth import ForwardAuthPolicy
from portway.policies.ip_filter import IpFilterPolicy
from portway.policies.jwt_auth import JwtPolicy
from portway.policies.rate_limit import RateLimitPolicy


@dataclass(frozen=True, slots=True)
class BuildContext:
    loop: asyncio.AbstractEventLoop
    redis: RedisConfig | None


Factory = Callable[[str, PolicyConfig, BuildContext], Policy]


@dataclass(frozen=True, slots=True)
class Phase:
    order: int
    factory: Factory
    why: str


def _ip_filter(name: str, config: PolicyConfig, context: BuildContext) -> Policy:
    assert config.ip_filter is not None
    return IpFilterPolicy(name, config.ip_filter)


def _cors(name: str, config: PolicyConfig, context: BuildContext) -> Policy:
    assert config.cors is not None
    return CorsPolicy(name, config.cors)


def _api_key(name: str, config: PolicyConfig, context: BuildContext) -> Policy:
    assert config.api_key is not None
    return ApiKeyPolicy(name, config.api_key)


def _basic_auth(name: str, config: PolicyConfig, context: BuildContext) -> Policy:
    assert config.basic_auth is not None
    return BasicAuthPolicy(name, config.basic_auth)


def _jwt(name: str, config: PolicyConfig, context: BuildContext) -> Policy:
    assert config.jwt is not None
    return JwtPolicy(name, config.jwt)


def _forward_auth(name: str, config: PolicyConfig, context: BuildContext) -> Policy:
    assert config.forward_auth is not None
    return ForwardAuthPolicy(name, config.forward_auth)


def _rate_limit(name: str, config: PolicyConfig, context: BuildContext) -> Policy:
    assert config.rate_limit is not None
    return RateLimitPolicy(name, config.rate_limit, context.loop, context.redis)


ADDRESS = 1
CORS = 5
AUTHENTICATION = 10
RATE_LIMITING = 20
_ADDRESS_FIRST = (
    "first: the cheapest refusal, and an address that may not use the route gets nothing else "
    "(no preflight answer, no password check, no quota)"
)
_BEFORE_AUTH = (
    "before authentication: a preflight carries no credentials (Fetch §4.8), so it is answered "
    "before anything asks for them, and a later refusal (401, 429) carries the CORS headers "
    "queued here, without which a browser hides it from the page"
)
_WHO_FIRST = "authentication first: who the client is decides everything after it"
_AFTER_AUTH = "after authentication: it may count per consumer; refused requests spend no quota"

PHASES: dict[str, Phase] = {
    "ip_filter": Phase(ADDRESS, _ip_filter, _ADDRESS_FIRST),
    "cors": Phase(CORS, _cors, _BEFORE_AUTH),
    "api_key": Phase(AUTHENTICATION, _api_key, _WHO_FIRST),
    "basic_auth": Phase(AUTHENTICATION, _basic_auth, _WHO_FIRST),
    "jwt": Phase(AUTHENTICATION, _jwt, _WHO_FIRST),
    "forward_auth": Phase(AUTHENTICATION, _forward_auth, _WHO_FIRST),
    "rate_limit": Phase(RATE_LIMITING, _rate_limit, _AFTER_AUTH),
}


def build(name: str, config: PolicyConfig, context: BuildContext) -> Policy:
    return PHASES[config.kind].factory(name, config, context)


def phase_of(policy: Policy) -> int:
    return PHASES[policy.kind].order
