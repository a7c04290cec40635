"""A route's policies in phase order, and the set of every policy of a snapshot.

A chain runs synchronously until a policy returns a pending verdict (``policies.base``); it then
hands back a ``PendingChain``, which waits for the verdict on the loop (bounded by the policy's
``timeout``) and carries on with the remaining policies, so the caller learns the outcome once,
later, through ``PendingChain.then``. A chain whose policies all answer at once never creates one.

``build_policies`` runs once per accepted config in each worker. A policy whose config did not
change is carried over (its counters, caches and Redis connection with it), as services are; the
others are closed once the new snapshot is live (``PolicySet.retire_replaced``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from portway.config.model import Config
from portway.config.policies import PolicyConfig, RedisConfig
from portway.messages import LocalAnswer, Request
from portway.policies import registry
from portway.policies.base import (
    UNAVAILABLE,
    BuildContext,
    Later,
    Pending,
    Policy,
    Rejections,
    Unavailable,
)
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

    def apply(self, request: Request, stats: Rejections) -> LocalAnswer | bytes | PendingChain:
        """The answer of the first policy that answers the request, counted in ``stats`` when it
        is a refusal (a CORS preflight's 204 is not); else the header lines the upstream gets (the
        authenticated consumer, if any); or, when a policy's verdict is pending, a
        ``PendingChain`` that will tell one of the two later."""
        for policy in self.policies:
            answer = policy.apply(request)
            if answer is not None:
                if isinstance(answer, LocalAnswer):
                    return self.answered(request, stats, policy, answer)
                index = next(i for i, p in enumerate(self.policies) if p is policy)
                return PendingChain(self, request, stats, index, answer)
        consumer = request.consumer
        if consumer:
            return b"%s: %s\r\n" % (CONSUMER_HEADER, consumer.encode("ascii"))
        return b""

    def answered(
        self, request: Request, stats: Rejections, policy: Policy, answer: LocalAnswer
    ) -> LocalAnswer:
        """``answer`` as the client gets it, counted when it is a refusal."""
        if request.response_headers:
            # What earlier stages queued for the response (CORS, HSTS) goes on the refusal
            # too: a browser reads a 401 or 429 only with its CORS headers.
            answer.headers = [*request.response_headers, *answer.headers]
        if answer.status >= 400:
            reason = answer.cause.decode("ascii") if answer.cause else "refused"
            stats.policy_rejected(self.route, policy.name, policy.kind, reason)
        return answer

    def resume(
        self, request: Request, stats: Rejections, start: int
    ) -> LocalAnswer | bytes | tuple[int, Pending]:
        """``apply`` from the policy at ``start`` on; a pending verdict comes back with its
        policy's index."""
        policies = self.policies
        for index in range(start, len(policies)):
            policy = policies[index]
            answer = policy.apply(request)
            if answer is not None:
                if isinstance(answer, LocalAnswer):
                    return self.answered(request, stats, policy, answer)
                return index, answer
        consumer = request.consumer
        if consumer:
            return b"%s: %s\r\n" % (CONSUMER_HEADER, consumer.encode("ascii"))
        return b""


class PendingChain:
    """A chain waiting for the pending verdict of its policy at ``index``, then running the rest.

    The outcome (what ``PolicyChain.apply`` would have returned, with the header lines resolved
    verdicts handed over in front) goes to the callback given to ``then``, exactly once, and never
    after ``cancel``. A verdict that raises, is cancelled by its policy, or is not resolved within
    the policy's ``timeout`` becomes a counted 503 ``policy_unavailable``: the request fails
    closed, and the client never sees a trace."""

    __slots__ = ("callback", "chain", "extra", "future", "index", "request", "stats", "timer")

    def __init__(
        self, chain: PolicyChain, request: Request, stats: Rejections, index: int, future: Pending
    ) -> None:
        self.chain = chain
        self.request = request
        self.stats = stats
        self.index = index
        self.future = future
        self.extra = b""  # header lines handed over by verdicts resolved so far
        self.callback: Callable[[LocalAnswer | bytes], None] | None = None
        self.timer: asyncio.TimerHandle | None = None

    @property
    def policy(self) -> Policy:
        """The policy whose verdict is awaited."""
        return self.chain.policies[self.index]

    def then(self, callback: Callable[[LocalAnswer | bytes], None]) -> None:
        """Start waiting; ``callback`` gets the outcome from the loop, never from this call."""
        self.callback = callback
        self._wait()

    def cancel(self) -> None:
        """Stop waiting (the client went away): the policy's work is cancelled, nobody is told."""
        self.callback = None
        self._stop_timer()
        self.future.cancel()

    def _wait(self) -> None:
        timeout = self.policy.timeout
        if timeout > 0:
            self.timer = self.future.get_loop().call_later(timeout, self._expired)
        self.future.add_done_callback(self._resolved)

    def _stop_timer(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None:
            timer.cancel()

    def _expired(self) -> None:
        self.timer = None
        future = self.future
        self._unavailable(f"no verdict within {self.policy.timeout:g}s")
        future.cancel()  # after: its done callback finds nobody waiting

    def _resolved(self, future: Pending) -> None:
        if future is not self.future or self.callback is None:
            return  # timed out or cancelled already
        self._stop_timer()
        if future.cancelled():
            self._unavailable("its check was cancelled")
            return
        error = future.exception()
        if error is not None:
            policy = self.policy
            log.warning("policy %s failed to decide: %r", policy.name, error)
            self._unavailable(f"its check failed ({type(error).__name__})")
            return
        result: Later = future.result()
        if isinstance(result, LocalAnswer):
            self._deliver(self.chain.answered(self.request, self.stats, self.policy, result))
            return
        if result:
            self.extra += result
        outcome = self.chain.resume(self.request, self.stats, self.index + 1)
        if isinstance(outcome, tuple):
            self.index, self.future = outcome
            self._wait()
            return
        self._deliver(self.extra + outcome if isinstance(outcome, bytes) else outcome)

    def _unavailable(self, why: str) -> None:
        policy = self.policy
        answer = LocalAnswer(
            503, f"policy '{policy.name}' could not decide: {why}", UNAVAILABLE.encode()
        )
        self._deliver(self.chain.answered(self.request, self.stats, policy, answer))

    def _deliver(self, outcome: LocalAnswer | bytes) -> None:
        callback, self.callback = self.callback, None
        if callback is not None:
            callback(outcome)


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
    context = BuildContext(loop=loop, redis=config.redis)
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
