"""What every policy is: a synchronous check of one request that passes it, or answers it.

Policies run on the event loop for every request of their routes, so ``apply`` never blocks and
never awaits: anything slow (a Redis round trip, a key set download) happens off the request path
and the check reads its latest result.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol

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


class Rejections(Protocol):
    """Where a refusal is counted (the worker's statistics)."""

    def policy_rejected(self, route: str, policy: str, kind: str, reason: str) -> None: ...


class Policy(ABC):
    """One configured policy. ``kind`` is the config key it was declared with; the registry orders
    kinds into phases."""

    kind: ClassVar[str]

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def apply(self, request: Request) -> LocalAnswer | None:
        """None: the request may go on (perhaps with ``request.consumer`` set or response headers
        queued on ``request.response_headers``); else the answer it gets instead: a refusal
        (status 400 or more, counted) whose ``cause`` names the reason (one of ``REASONS``), or an
        answer the policy gives for the service (a CORS preflight's 204, not counted)."""

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
