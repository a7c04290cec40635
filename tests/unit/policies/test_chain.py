"""The policy chain with pending verdicts: order kept, failures and timeouts fail closed (503
``policy_unavailable``, counted), a cancelled wait tells nobody and cancels the policy's work, and a
chain whose policies all answer at once never waits."""

from __future__ import annotations

import asyncio

import pytest

from portway.messages import LocalAnswer, Request
from portway.policies.base import UNAVAILABLE, Pending, Policy
from portway.policies.chain import PendingChain, PolicyChain
from portway.upstream.forward import CONSUMER_HEADER


class Counted:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, str]] = []

    def policy_rejected(self, route: str, policy: str, kind: str, reason: str) -> None:
        self.seen.append((route, policy, kind, reason))


class Waits(Policy):
    """Answers later: the test resolves ``future``."""

    kind = "basic_auth"  # the authentication phase

    def __init__(self, name: str, calls: list[str], timeout: float = 10.0) -> None:
        super().__init__(name)
        self.calls = calls
        self.timeout = timeout
        self.future: Pending | None = None

    def apply(self, request: Request) -> Pending:
        self.calls.append(self.name)
        self.future = asyncio.get_running_loop().create_future()
        return self.future


class Now(Policy):
    """Answers at once (None unless told otherwise)."""

    kind = "rate_limit"  # after authentication

    def __init__(self, name: str, calls: list[str], answer: LocalAnswer | None = None) -> None:
        super().__init__(name)
        self.calls = calls
        self.answer = answer

    def apply(self, request: Request) -> LocalAnswer | None:
        self.calls.append(self.name)
        return self.answer


def request() -> Request:
    return Request("GET", "example.com", "/", request_id="r1")


async def outcome_of(pending: PendingChain) -> LocalAnswer | bytes:
    done: asyncio.Future[LocalAnswer | bytes] = asyncio.get_running_loop().create_future()
    pending.then(done.set_result)
    return await done


def test_a_synchronous_chain_never_waits() -> None:
    calls: list[str] = []
    chain = PolicyChain("r", [Now("a", calls), Now("b", calls)])
    assert chain.apply(request(), Counted()) == b""
    assert calls == ["a", "b"]


def test_later_policies_run_only_once_the_pending_verdict_admits() -> None:
    async def run() -> None:
        calls: list[str] = []
        first = Waits("auth", calls)
        chain = PolicyChain("r", [Now("limit", calls), first])  # phase order: auth first
        req = request()
        pending = chain.apply(req, Counted())
        assert isinstance(pending, PendingChain)
        assert calls == ["auth"]
        told: list[LocalAnswer | bytes] = []
        pending.then(told.append)
        await asyncio.sleep(0)
        assert calls == ["auth"] and told == []  # nothing runs before the verdict
        req.consumer = "alice"
        assert first.future is not None
        first.future.set_result(b"x-user: alice\r\n")
        await asyncio.sleep(0)
        assert calls == ["auth", "limit"]
        assert told == [b"x-user: alice\r\n%s: alice\r\n" % CONSUMER_HEADER]

    asyncio.run(run())


def test_two_pending_verdicts_in_a_row_and_a_refusal_after_them() -> None:
    async def run() -> None:
        calls: list[str] = []
        one, two = Waits("one", calls), Waits("two", calls)
        refusal = LocalAnswer(429, "slow down", b"rate_limited")
        stats = Counted()
        chain = PolicyChain("r", [one, two, Now("limit", calls, refusal)])
        pending = chain.apply(request(), stats)
        assert isinstance(pending, PendingChain)
        task = asyncio.ensure_future(outcome_of(pending))
        await asyncio.sleep(0)
        assert one.future is not None
        one.future.set_result(None)
        await asyncio.sleep(0)
        assert calls == ["one", "two"]
        assert two.future is not None
        two.future.set_result(b"x-a: 1\r\n")
        assert await task is refusal
        assert calls == ["one", "two", "limit"]
        assert stats.seen == [("r", "limit", "rate_limit", "rate_limited")]

    asyncio.run(run())


def test_a_pending_refusal_is_counted_and_carries_the_queued_response_headers() -> None:
    async def run() -> None:
        calls: list[str] = []
        auth = Waits("auth", calls)
        stats = Counted()
        req = request()
        req.response_headers.append((b"access-control-allow-origin", b"https://app"))
        pending = PolicyChain("r", [auth, Now("limit", calls)]).apply(req, stats)
        assert isinstance(pending, PendingChain) and auth.future is not None
        auth.future.set_result(LocalAnswer(401, "who are you", b"missing_credentials"))
        answer = await outcome_of(pending)
        assert isinstance(answer, LocalAnswer) and answer.status == 401
        assert (b"access-control-allow-origin", b"https://app") in answer.headers
        assert calls == ["auth"]
        assert stats.seen == [("r", "auth", "basic_auth", "missing_credentials")]

    asyncio.run(run())


@pytest.mark.parametrize("failure", ["raises", "cancelled"])
def test_a_failing_verdict_is_503_policy_unavailable(failure: str) -> None:
    async def run() -> None:
        auth = Waits("auth", [])
        stats = Counted()
        pending = PolicyChain("r", [auth]).apply(request(), stats)
        assert isinstance(pending, PendingChain) and auth.future is not None
        if failure == "raises":
            auth.future.set_exception(RuntimeError("auth backend exploded"))
        else:
            auth.future.cancel()
        answer = await outcome_of(pending)
        assert isinstance(answer, LocalAnswer)
        assert (answer.status, answer.cause) == (503, UNAVAILABLE.encode())
        assert "exploded" not in answer.detail  # no internals to the client
        assert stats.seen == [("r", "auth", "basic_auth", UNAVAILABLE)]

    asyncio.run(run())


def test_a_verdict_not_given_in_time_is_503_and_its_work_is_cancelled() -> None:
    async def run() -> None:
        auth = Waits("auth", [], timeout=0.05)
        stats = Counted()
        pending = PolicyChain("r", [auth]).apply(request(), stats)
        assert isinstance(pending, PendingChain) and auth.future is not None
        loop = asyncio.get_running_loop()
        began = loop.time()
        answer = await outcome_of(pending)
        assert 0.04 <= loop.time() - began < 1.0
        assert isinstance(answer, LocalAnswer) and answer.status == 503
        assert "0.05s" in answer.detail
        assert auth.future.cancelled()
        assert stats.seen == [("r", "auth", "basic_auth", UNAVAILABLE)]

    asyncio.run(run())


def test_a_cancelled_wait_tells_nobody_and_cancels_the_policy_work() -> None:
    async def run() -> None:
        calls: list[str] = []
        auth = Waits("auth", calls, timeout=0.05)
        stats = Counted()
        pending = PolicyChain("r", [auth, Now("limit", calls)]).apply(request(), stats)
        assert isinstance(pending, PendingChain) and auth.future is not None
        told: list[LocalAnswer | bytes] = []
        pending.then(told.append)
        pending.cancel()  # the client went away
        assert auth.future.cancelled()
        await asyncio.sleep(0.1)  # past the timeout too
        assert told == [] and calls == ["auth"] and stats.seen == []

    asyncio.run(run())


def test_the_outcome_is_never_delivered_from_then_itself() -> None:
    async def run() -> None:
        auth = Waits("auth", [])
        pending = PolicyChain("r", [auth]).apply(request(), Counted())
        assert isinstance(pending, PendingChain) and auth.future is not None
        auth.future.set_result(None)  # resolved before anyone waits
        told: list[LocalAnswer | bytes] = []
        pending.then(told.append)
        assert told == []  # the caller finishes setting up first
        await asyncio.sleep(0)
        assert told == [b""]

    asyncio.run(run())
