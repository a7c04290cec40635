"""What every policy is: a check of one request that passes it, or answers it.

Policies run on the event loop for every request of their routes, so ``apply`` never blocks. Most
answer at once (anything slow, a Redis round trip or a key set download, happens off the request
path and the check reads its latest result). A policy that cannot know without waiting (a password
hash computed in a thread, an auth service asked over HTTP) returns a *pending verdict*, an
``asyncio.Future``: the chain waits for it without blocking (at most ``Policy.timeout`` seconds) and
the request goes nowhere until it resolves.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeAlias

from portway.config.policies import RedisConfig
from portway.messages import LocalAnswer, Request

# The bounded reasons a policy refuses a request for, as metric labels.
MISSING = "missing_credentials"
INVALID = "invalid_credentials"
EXPIRED = "expired_credentials"
RATE_LIMITED = "rate_limited"
UNAVAILABLE = "policy_unavailable"
ADDRESS_REFUSED = "address_refused"
CORS_REFUSED = "cors_refused"  # a preflight for an origin, method or header not allowed
REASONS = (MISSING, INVALID, EXPIRED, RATE_LIMITED, UNAVAILABLE, ADDRESS_REFUSED, CORS_REFUSED)

# What a pending verdict resolves to: None (the request goes on), bytes (it goes on, and these
# complete header lines, ``name: value\r\n`` each, go upstream with it: the headers a forward-auth
# service hands over) or the answer the request gets instead.
Later: TypeAlias = LocalAnswer | bytes | None
Pending: TypeAlias = asyncio.Future[Later]
Verdict: TypeAlias = LocalAnswer | Pending | None


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What building a policy may need besides its own config."""

    loop: asyncio.AbstractEventLoop
    redis: RedisConfig | None


class Rejections(Protocol):
    """Where a refusal is counted (the worker's statistics)."""

    def policy_rejected(self, route: str, policy: str, kind: str, reason: str) -> None: ...


class Policy(ABC):
    """One configured policy. ``kind`` is the config key it was declared with; the registry orders
    kinds into phases."""

    kind: ClassVar[str]
    # The longest a pending verdict of this policy is waited for; then the request gets 503
    # ``policy_unavailable`` (fail closed). Policies that never return one ignore it.
    timeout: float = 10.0

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def from_config(cls, name: str, config: Any, context: BuildContext) -> Policy:
        """The policy ``name`` from its kind's config (``PolicyConfig.<kind>``); most kinds need
        nothing else, those that do (a Redis-backed rate limit) override this."""
        return cls(name, config)  # type: ignore[call-arg]  # subclasses take (name, config)

    @abstractmethod
    def apply(self, request: Request) -> Verdict:
        """None: the request may go on (perhaps with ``request.consumer`` set or response headers
        queued on ``request.response_headers``); else the answer it gets instead: a refusal
        (status 400 or more, counted) whose ``cause`` names the reason (one of ``REASONS``), or an
        answer the policy gives for the service (a CORS preflight's 204, not counted); or a
        pending verdict (a Future of ``Later``) when the answer takes time. A pending verdict that
        fails or is not resolved within ``timeout`` becomes 503 ``policy_unavailable``; it is
        cancelled when the client goes away (the policy must release what it holds then)."""

    def drops(self) -> frozenset[bytes]:
        """Request header names (lower-case) not to forward upstream, e.g. a credential."""
        return frozenset()

    def state(self) -> dict[str, Any] | None:
        """What the admin API shows of this policy's live state; None: nothing to show."""
        return None

    def close(self) -> None:  # noqa: B027  (optional hook: most policies run nothing)
        """Stop anything running in the background (called when a reload drops the policy)."""


class Unavailable(Policy):
    """Stands in for a policy that could not be built (a key file gone since validation): its
    routes answer 503 rather than run without it, and every other route keeps serving."""

    def __init__(self, name: str, kind: str, why: str) -> None:
        super().__init__(name)
        self.kind = kind  # type: ignore[misc]  # counted under the kind it was declared with
        self.why = why

    def apply(self, request: Request) -> LocalAnswer | None:
        return LocalAnswer(503, f"policy '{self.name}' is unavailable", UNAVAILABLE.encode())
