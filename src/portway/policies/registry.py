"""Which policy kinds exist, how each is built, and the one order they run in (with why).

A route lists policies by name in any order; they always run in phase order, then in the route's
order within a phase. Fixed here, in one table, so no config can make a rate limit count requests
that authentication would have refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from portway.config.policies import PolicyConfig
from portway.policies.api_key import ApiKeyPolicy
from portway.policies.base import BuildContext, Policy
from portway.policies.basic_auth import BasicAuthPolicy
from portway.policies.cors import CorsPolicy
from portway.policies.forward_auth import ForwardAuthPolicy
from portway.policies.ip_filter import IpFilterPolicy
from portway.policies.jwt_auth import JwtPolicy
from portway.policies.rate_limit import RateLimitPolicy


@dataclass(frozen=True, slots=True)
class Phase:
    order: int
    policy: type[Policy]  # built by its from_config
    why: str


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
    "ip_filter": Phase(ADDRESS, IpFilterPolicy, _ADDRESS_FIRST),
    "cors": Phase(CORS, CorsPolicy, _BEFORE_AUTH),
    "api_key": Phase(AUTHENTICATION, ApiKeyPolicy, _WHO_FIRST),
    "basic_auth": Phase(AUTHENTICATION, BasicAuthPolicy, _WHO_FIRST),
    "jwt": Phase(AUTHENTICATION, JwtPolicy, _WHO_FIRST),
    "forward_auth": Phase(AUTHENTICATION, ForwardAuthPolicy, _WHO_FIRST),
    "rate_limit": Phase(RATE_LIMITING, RateLimitPolicy, _AFTER_AUTH),
}


def build(name: str, config: PolicyConfig, context: BuildContext) -> Policy:
    kind = config.kind
    return PHASES[kind].policy.from_config(name, getattr(config, kind), context)


def phase_of(policy: Policy) -> int:
    return PHASES[policy.kind].order
