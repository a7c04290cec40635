"""A route's policies in phase order, and the set of every policy of a snapshot.

``build_policies`` runs once per accepted config in each worker. A policy whose config did not
change is carried over (its counters, caches and Redis connection with it), as services are; the
others are closed once the new snapshot is live (``PolicySet.retire_replaced``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from portway.config.model import Config
from portway.config.policies import PolicyConfig, RedisConfig
from portway.messages import LocalAnswer, Request
from portway.policies import registry
from portway.policies.base import Policy, Rejections, Unavailable
from portway.upstream.forward import CONSUMER_HEADER

log = logging.getLogger("portway.policies")


class PolicyChain:
    """The policies of one route, in the order they run."""

    __slots__ = ("drop", "policies", "route")

    def __init__(self, route: str, policies: Sequence[Policy]) -> None:
        self.route = route
        ordered = sorted(enumerate(policies), key=lambda p: (registry.phase_of(p[1]), p[0]))
        self.policies = tuple(policy for _, policy in ordered)
        self.drop = frozenset().union(*(p.drops() for p in self.policies))

    def apply(self, request: Request, stats: Rejections) -> LocalAnswer | bytes:
        """The answer of the first policy that answers the request, counted in ``stats`` when it
        is a refusal (a CORS preflight's 204 is not); else the header lines the upstream gets (the
        authenticated consumer, if any)."""
        for policy in self.policies:
            answer = policy.apply(request)
            if answer is not None:
                if request.response_headers:
                    # What earlier stages queued for the response (CORS, HSTS) goes on the refusal
                    # too: a browser reads a 401 or 429 only with its CORS headers.
                    answer.headers = [*request.response_headers, *answer.headers]
                if answer.status >= 400:
                    reason = answer.cause.decode("ascii") if answer.cause else "refused"
                    stats.policy_rejected(self.route, policy.name, policy.kind, reason)
                return answer
        consumer = request.consumer
        if consumer:
            return b"%s: %s\r\n" % (CONSUMER_HEADER, consumer.encode("ascii"))
        return b""


class PolicySet:
    """Every policy of one snapshot by name, and the chain of each route by route index."""

    __slots__ = ("by_name", "chains", "configs", "redis")

    def __init__(
        self,
        by_name: dict[str, Policy],
        configs: dict[str, PolicyConfig],
        chains: tuple[PolicyChain | None, ...],
        redis: RedisConfig | None,
    ) -> None:
        self.by_name = by_name
        self.configs = configs
        self.chains = chains
        self.redis = redis  # what the rate limits of this set were built with

    def retire_replaced(self, current: PolicySet) -> None:
        """Close the policies of this (older) set that ``current`` does not use any more."""
        live = {id(p) for p in current.by_name.values()}
        for policy in self.by_name.values():
            if id(policy) not in live:
                policy.close()

    def close(self) -> None:
        for policy in self.by_name.values():
            policy.close()

    def state(self) -> dict[str, Any]:
        """Live state of the policies that have one (rate limits), by name."""
        states: dict[str, Any] = {}
        for name, policy in self.by_name.items():
            state = policy.state()
            if state is not None:
                states[name] = state
        return states


def build_policies(
    config: Config, previous: PolicySet | None, loop: asyncio.AbstractEventLoop
) -> PolicySet:
    context = registry.BuildContext(loop=loop, redis=config.redis)
    by_name: dict[str, Policy] = {}
    for name, policy_config in config.policies.items():
        kept = previous.by_name.get(name) if previous is not None else None
        if (
            kept is not None
            and previous is not None
            and previous.configs.get(name) == policy_config
            and (policy_config.rate_limit is None or previous.redis == config.redis)
        ):
            by_name[name] = kept
        else:
            try:
                by_name[name] = registry.build(name, policy_config, context)
            except Exception as exc:  # what validation checked changed since (a key file)
                log.error("policy %s cannot be built, its routes answer 503: %s", name, exc)
                by_name[name] = Unavailable(name, policy_config.kind, str(exc))
    chains: list[PolicyChain | None] = []
    for index, route in enumerate(config.routes):
        named = [by_name[n] for n in route.policies if n in by_name]
        chains.append(PolicyChain(route.name or f"route-{index}", named) if named else None)
    return PolicySet(by_name, dict(config.policies), tuple(chains), config.redis)
