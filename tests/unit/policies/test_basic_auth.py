"""HTTP Basic authentication (RFC 7617): credentials parsed strictly, Django-compatible PBKDF2
hashes and htpasswd's bcrypt ones, answers that do not tell whether a user exists, and the two
guards that keep hashing off the event loop (remembered good credentials, per-IP throttling of
failures)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import bcrypt
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from portway.cli import app
from portway.config.policies import BasicAuthConfig, BasicUser
from portway.messages import LocalAnswer, Request
from portway.policies import basic_auth
from portway.policies.base import INVALID, MISSING
from portway.policies.basic_auth import (
    BasicAuthPolicy,
    decode_credentials,
    hash_password,
    parse_hash,
    verify_password,
)

ITERATIONS = 1000  # the least the model allows: keeps the suite fast
CHALLENGE = (b"www-authenticate", b'Basic realm="staff", charset="UTF-8"')


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingVerify:
    """Wraps ``verify_password`` to count PBKDF2 runs."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, password: str, stored: basic_auth.StoredHash) -> bool:
        self.calls += 1
        return verify_password(password, stored)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def make_request(authorization: str | bytes | None = None, client_ip: str = "192.0.2.1") -> Request:
    headers: list[tuple[bytes, bytes]] = []
    if authorization is not None:
        raw = authorization if isinstance(authorization, bytes) else authorization.encode("latin-1")
        headers.append((b"Authorization", raw))
    return Request("GET", "example.com", "/", headers=headers, client_ip=client_ip)


def config(**overrides: Any) -> BasicAuthConfig:
    users = [
        {"name": "alice", "password_hash": hash_password("wonder:land", ITERATIONS)},
        {"name": "bob", "password_hash": hash_password("pässwörd", ITERATIONS)},
    ]
    return BasicAuthConfig.model_validate({"realm": "staff", "users": users, **overrides})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def policy(clock: Clock) -> BasicAuthPolicy:
    return BasicAuthPolicy("staff-login", config(), clock)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> CountingVerify:
    counter = CountingVerify()
    monkeypatch.setattr(basic_auth, "verify_password", counter)
    return counter


def refused(answer: LocalAnswer | None, cause: str) -> LocalAnswer:
    assert answer is not None
    assert (answer.status, answer.cause) == (401, cause.encode())
    assert answer.headers[0] == CHALLENGE
    return answer


# -- hashes --------------------------------------------------------------------------------------


def test_django_test_vector_round_trips() -> None:
    """Django's own test vector (auth_tests, Django 1.4-1.6): the formats are the same."""
    django = "pbkdf2_sha256$10000$seasalt$CWWFdHOWwPnki7HvkcqN9iA2T3KLW1cf2uZ5kvArtVY="
    assert hash_password("lètmein", 10000, "seasalt") == django
    assert verify_password("lètmein", parse_hash(django))
    assert not verify_password("lètmeinz", parse_hash(django))


def test_hash_password_uses_a_fresh_salt_and_the_model_accepts_it() -> None:
    first, second = hash_password("x", ITERATIONS), hash_password("x", ITERATIONS)
    assert first != second
    algorithm, iterations, salt, digest = first.split("$")
    assert (algorithm, iterations, len(salt)) == ("pbkdf2_sha256", "1000", 22)
    assert len(base64.b64decode(digest)) == 32
    BasicUser(name="x", password_hash=first)


def test_passwords_are_compared_in_nfc() -> None:
    """RFC 7617 §2.1: with charset UTF-8, NFC; a decomposed é matches a precomposed one."""
    stored = parse_hash(hash_password("caf\u00e9", ITERATIONS))
    assert verify_password("cafe\u0301", stored)


@pytest.mark.parametrize(
    ("password_hash", "message"),
    [
        ("md5$1000$salt$abc", "expected pbkdf2_sha256"),
        ("pbkdf2_sha256$999$salt$" + "A" * 43 + "=", "at least 1000"),
        ("pbkdf2_sha256$1000$$" + "A" * 43 + "=", "salt"),
        ("pbkdf2_sha256$1000$salt$not-base64!", "base64 of 32 bytes"),
        ("pbkdf2_sha256$1000$salt$" + base64.b64encode(b"short").decode(), "base64 of 32 bytes"),
        ("$2y$03$" + "a" * 53, "a cost from 04 to 31"),  # below bcrypt's least cost
        ("$2y$10$" + "a" * 52, "53 characters"),
        ("$2x$10$" + "a" * 53, "expected a bcrypt hash"),  # $2x$: a buggy old variant
        ("$2y$10$" + "a" * 52 + "!", "53 characters"),
    ],
)
def test_malformed_hashes_are_config_errors(password_hash: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BasicUser(name="x", password_hash=password_hash)


def htpasswd_bcrypt(password: str, cost: int = 4) -> str:
    """What ``htpasswd -B`` writes: a ``$2y$`` bcrypt hash (the least cost keeps the suite fast)."""
    encoded = bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(cost)).decode("ascii")
    return "$2y$" + encoded[4:]


def test_bcrypt_hashes_from_htpasswd_are_checked() -> None:
    stored = parse_hash(BasicUser(name="x", password_hash=htpasswd_bcrypt("s3cret")).password_hash)
    assert isinstance(stored, basic_auth.BcryptHash) and stored.cost == 4
    assert verify_password("s3cret", stored)
    assert not verify_password("s3cret ", stored)
    assert not verify_password("", stored)
    # Every prefix means the same algorithm here ($2a$, $2b$, $2y$).
    for prefix in (b"$2a$", b"$2b$"):
        assert verify_password("s3cret", stored._replace(encoded=prefix + stored.encoded[4:]))


def test_bcrypt_reads_the_first_72_bytes_of_a_password() -> None:
    """As htpasswd and every bcrypt implementation do (bcrypt 5 refuses longer ones instead)."""
    stored = parse_hash(htpasswd_bcrypt("é" * 36))  # 72 bytes of UTF-8
    assert verify_password("é" * 36, stored)
    assert verify_password("é" * 36 + "anything after", stored)
    assert not verify_password("é" * 35, stored)


def test_bcrypt_users_get_a_bcrypt_dummy_at_the_dearest_cost() -> None:
    users = [
        {"name": "alice", "password_hash": htpasswd_bcrypt("a", 4)},
        {"name": "bob", "password_hash": htpasswd_bcrypt("b", 5)},
    ]
    policy = BasicAuthPolicy("staff", config(users=users))
    assert isinstance(policy.dummy, basic_auth.BcryptHash) and policy.dummy.cost == 5
    assert not verify_password("", policy.dummy)
    assert not verify_password("portwayunknownuser", policy.dummy)
    assert policy.apply(make_request(basic("bob", "b"))) is None  # outside a loop: inline
    refused(policy.apply(make_request(basic("carol", "b"))), INVALID)


def test_one_policy_cannot_mix_hash_kinds() -> None:
    users = [
        {"name": "alice", "password_hash": hash_password("a", ITERATIONS)},
        {"name": "bob", "password_hash": htpasswd_bcrypt("b")},
    ]
    with pytest.raises(ValidationError, match="mix bcrypt and pbkdf2_sha256: use one kind"):
        BasicAuthConfig.model_validate({"users": users})


# -- credentials ---------------------------------------------------------------------------------


def test_good_credentials_name_the_consumer(policy: BasicAuthPolicy) -> None:
    request = make_request(basic("alice", "wonder:land"))
    assert policy.apply(request) is None
    assert request.consumer == "alice"


def test_password_may_contain_colons_and_utf8(policy: BasicAuthPolicy) -> None:
    """RFC 7617 §2: the user-id ends at the first colon; the password may hold more."""
    assert decode_credentials(base64.b64encode(b"a:b:c").decode()) == ("a", "b:c")
    request = make_request(basic("bob", "pässwörd"))
    assert policy.apply(request) is None
    assert request.consumer == "bob"


@pytest.mark.parametrize("scheme", ["basic", "BASIC", "bAsIc"])
def test_scheme_is_case_insensitive(policy: BasicAuthPolicy, scheme: str) -> None:
    token = basic("alice", "wonder:land").split(" ", 1)[1]
    request = make_request(f"{scheme}   {token}")
    assert policy.apply(request) is None


@pytest.mark.parametrize("value", [None, "", "Bearer abc.def.ghi", "Digest username=alice"])
def test_missing_or_other_scheme_gets_the_challenge(
    policy: BasicAuthPolicy, value: str | None
) -> None:
    answer = refused(policy.apply(make_request(value)), MISSING)
    assert "required" in answer.detail


@pytest.mark.parametrize(
    "value",
    [
        "Basic",  # no token
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"alice").decode(),  # no colon
        "Basic YWxpY2U6d29uZGVyMQ",  # "alice:wonder1" without its padding
        "Basic " + base64.b64encode(b"alice:\xff\xfe").decode(),  # not UTF-8
        "Basic " + base64.b64encode(b"ali\x01ce:pw").decode(),  # a control character
        b"Basic \xc3\xa9\xff",  # non-ASCII bytes in the header itself
        basic("alice", "wonder:land") + ", " + basic("bob", "x"),  # two fields, joined
    ],
)
def test_malformed_credentials_are_invalid_never_an_error(
    policy: BasicAuthPolicy, counting: CountingVerify, value: str | bytes
) -> None:
    answer = refused(policy.apply(make_request(value)), INVALID)
    assert "malformed" in answer.detail
    assert counting.calls == 0


def test_unknown_user_and_wrong_password_read_the_same(
    policy: BasicAuthPolicy, counting: CountingVerify
) -> None:
    unknown = refused(policy.apply(make_request(basic("mallory", "wonder:land"))), INVALID)
    wrong = refused(policy.apply(make_request(basic("alice", "wonderland"))), INVALID)
    assert unknown.detail == wrong.detail
    assert "alice" not in wrong.detail and "mallory" not in unknown.detail
    assert counting.calls == 2  # an unknown user is hashed too: same time as a wrong password


def test_user_names_are_case_sensitive(policy: BasicAuthPolicy) -> None:
    refused(policy.apply(make_request(basic("Alice", "wonder:land"))), INVALID)


def test_realm_and_drops() -> None:
    assert BasicAuthPolicy("p", config()).drops() == {b"authorization"}
    assert BasicAuthPolicy("p", config(strip_credentials=False)).drops() == frozenset()
    with pytest.raises(ValidationError, match="quotes"):
        config(realm='say "hi"')


# -- the event loop's guards -----------------------------------------------------------------------


def test_good_credentials_are_hashed_once(
    policy: BasicAuthPolicy, counting: CountingVerify
) -> None:
    for _ in range(5):
        request = make_request(basic("alice", "wonder:land"))
        assert policy.apply(request) is None
        assert request.consumer == "alice"
    assert counting.calls == 1
    # A rebuilt policy (any config change) starts with nothing remembered.
    assert BasicAuthPolicy("staff-login", config()).cache == {}


def test_remembered_credentials_are_bounded(
    policy: BasicAuthPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(basic_auth, "MAX_CACHED", 3)
    monkeypatch.setattr(basic_auth, "verify_password", lambda password, stored: True)
    for n in range(5):
        assert policy.apply(make_request(basic("alice", f"any-{n}"))) is None
    assert len(policy.cache) == 3


def test_failures_from_one_ip_stop_hashing_for_the_window(
    policy: BasicAuthPolicy, counting: CountingVerify, clock: Clock
) -> None:
    for _ in range(basic_auth.MAX_FAILURES):
        refused(policy.apply(make_request(basic("alice", "guess"))), INVALID)
        clock.now += 1
    assert counting.calls == 10
    # Even the right password is not checked now: the guesser cannot tell it was right.
    throttled = refused(policy.apply(make_request(basic("alice", "wonder:land"))), INVALID)
    assert "too many failed attempts" in throttled.detail
    assert (b"retry-after", b"50") in throttled.headers
    assert counting.calls == 10
    # Other addresses are not affected.
    assert policy.apply(make_request(basic("alice", "wonder:land"), "192.0.2.2")) is None
    assert counting.calls == 11
    # Once the minute since the first failure has passed, checks resume.
    clock.now += 50
    assert policy.apply(make_request(basic("alice", "wonder:land"))) is None


def test_remembered_credentials_pass_a_throttled_address(
    policy: BasicAuthPolicy, counting: CountingVerify
) -> None:
    """A user behind the same NAT as a guesser keeps working; the guesser learns nothing."""
    good = basic("alice", "wonder:land")
    assert policy.apply(make_request(good)) is None
    for _ in range(basic_auth.MAX_FAILURES + 5):
        refused(policy.apply(make_request(basic("alice", "guess"))), INVALID)
    assert counting.calls == 1 + basic_auth.MAX_FAILURES
    assert policy.apply(make_request(good)) is None


def test_malformed_credentials_are_not_counted_as_failures(
    policy: BasicAuthPolicy, counting: CountingVerify
) -> None:
    for _ in range(20):
        refused(policy.apply(make_request("Basic !!!")), INVALID)
    assert policy.failures == {}
    assert policy.apply(make_request(basic("alice", "wonder:land"))) is None


def test_tracked_addresses_are_bounded(
    policy: BasicAuthPolicy, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    monkeypatch.setattr(basic_auth, "MAX_TRACKED_IPS", 4)
    for n in range(10):
        refused(policy.apply(make_request(basic("alice", "x"), f"198.51.100.{n}")), INVALID)
    assert len(policy.failures) == 4
    clock.now += basic_auth.FAILURE_WINDOW
    refused(policy.apply(make_request(basic("alice", "x"), "203.0.113.1")), INVALID)
    assert list(policy.failures) == ["203.0.113.1"]  # the stale ones went first


# -- portway hash-password -----------------------------------------------------------------------


def test_hash_password_from_a_confirmed_prompt() -> None:
    result = CliRunner().invoke(
        app, ["hash-password", "--iterations", "1000"], input="s3cret:x\ns3cret:x\n"
    )
    assert result.exit_code == 0, result.output
    line = result.output.strip().splitlines()[-1]
    assert "s3cret" not in result.output  # hidden input is not echoed
    assert verify_password("s3cret:x", parse_hash(line))


def test_hash_password_from_stdin_keeps_spaces_but_not_the_newline() -> None:
    result = CliRunner().invoke(app, ["hash-password", "--stdin"], input=" pw with spaces \n")
    assert result.exit_code == 0, result.output
    stored = parse_hash(result.output.strip())
    assert stored.iterations == basic_auth.DEFAULT_ITERATIONS
    assert verify_password(" pw with spaces ", stored)


@pytest.mark.parametrize("args", [["--stdin"], ["--stdin", "--iterations", "999"]])
def test_hash_password_refuses_empty_passwords_and_too_few_rounds(args: list[str]) -> None:
    result = CliRunner().invoke(
        app, ["hash-password", *args], input="\n" if len(args) == 1 else "x\n"
    )
    assert result.exit_code == 2


# -- off the loop ----------------------------------------------------------------------------------


def test_on_a_loop_the_hash_is_checked_in_a_thread_and_then_remembered(
    policy: BasicAuthPolicy, counting: CountingVerify
) -> None:
    async def run() -> None:
        request = make_request(basic("alice", "wonder:land"))
        pending = policy.apply(request)
        assert isinstance(pending, asyncio.Future)  # a pending verdict, not an answer
        assert await pending is None
        assert request.consumer == "alice"
        again = make_request(basic("alice", "wonder:land"))
        assert policy.apply(again) is None  # remembered: answered at once, on the loop
        assert again.consumer == "alice"
        wrong = policy.apply(make_request(basic("alice", "guess")))
        assert isinstance(wrong, asyncio.Future)
        refused(await wrong, INVALID)
        assert counting.calls == 2
        assert policy.hashing == 0

    asyncio.run(run())


def test_hashing_threads_keep_the_loop_free() -> None:
    slow = BasicAuthConfig.model_validate(
        {"users": [{"name": "alice", "password_hash": hash_password("pw", 400_000)}]}
    )
    policy = BasicAuthPolicy("slow", slow)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        began = loop.time()
        pending = policy.apply(make_request(basic("alice", "pw")))
        assert isinstance(pending, asyncio.Future)
        assert await pending is None
        took = loop.time() - began
        ticker.cancel()
        # The loop kept ticking while the hash ran: at least half the ticks it could have made.
        assert ticks >= took / 0.005 / 2

    asyncio.run(run())


def test_a_cancelled_check_is_dropped(policy: BasicAuthPolicy) -> None:
    async def run() -> None:
        pending = policy.apply(make_request(basic("alice", "guess")))
        assert isinstance(pending, asyncio.Future)
        pending.cancel()  # the client went away
        await asyncio.sleep(0.05)
        assert policy.failures == {} or all(n <= 1 for _, n in policy.failures.values())
        assert policy.hashing == 0

    asyncio.run(run())


def test_too_many_checks_at_once_are_503(
    policy: BasicAuthPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(basic_auth, "MAX_HASHING", 1)

    async def run() -> None:
        first = policy.apply(make_request(basic("alice", "one")))
        assert isinstance(first, asyncio.Future)
        busy = policy.apply(make_request(basic("alice", "two")))
        assert isinstance(busy, LocalAnswer)
        assert (busy.status, busy.cause) == (503, b"policy_unavailable")
        await first

    asyncio.run(run())
