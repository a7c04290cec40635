"""HTTP Basic authentication (RFC 7617) against configured users with PBKDF2 or bcrypt hashes.

Password hashes are Django's ``pbkdf2_sha256`` format, so hashes from a Django user table can be
used as they are, and ``portway hash-password`` writes the same thing::

    pbkdf2_sha256$<iterations>$<salt>$<hash>

``iterations`` is a decimal count; ``salt`` is text without ``$`` whose UTF-8 bytes are the PBKDF2
salt as written (Django uses 22 random letters and digits; it is *not* base64-decoded); ``hash`` is
the standard base64 (with padding) of the 32-byte ``PBKDF2-HMAC-SHA256(password, salt,
iterations)``. Passwords are UTF-8 in Unicode NFC, the form RFC 7617 §2.1 asks clients to send with
``charset="UTF-8"``, both when hashing and when checking.

bcrypt hashes (``$2y$``, ``$2b$``, ``$2a$``: what ``htpasswd -B`` writes, so an nginx or Apache
password file's users can be copied over) are checked by the ``bcrypt`` package. bcrypt reads the
first 72 bytes of a password, as htpasswd and every bcrypt implementation do; so does the check.
One policy's users all have one kind of hash (the config model says so): see the dummy hash below.

Both are slow on purpose (about 50 ms at the default count), far too slow for the event loop,
where every client of the worker would wait while one password is checked. So a check that must
hash runs in a small thread pool (``HASH_THREADS``; ``hashlib`` and ``bcrypt`` release the GIL)
and ``apply`` returns a pending verdict that the chain awaits: other requests are served meanwhile.
Outside a running event loop (the CLI, plain unit tests) the check runs inline. Threads are a
scarce resource too, so three things keep hashing rare:

* a successful check is remembered by the SHA-256 of the whole ``Authorization`` value, so a client
  that keeps sending the same credentials pays once and is then answered at once, on the loop
  (bounded; forgotten when the policy is rebuilt, which any change of its config does);
* after ``MAX_FAILURES`` failed checks from one client IP within ``FAILURE_WINDOW`` seconds, that IP
  gets 401 without any hashing until the window has passed, so one address guessing passwords
  costs at most ``MAX_FAILURES`` hashes a minute. Remembered good credentials still pass, so a
  user sharing the address (NAT) with a guesser is not locked out;
* at most ``MAX_HASHING`` checks of one policy wait for or use the threads at once; beyond that a
  request gets 503 ``policy_unavailable`` with ``Retry-After`` instead of an ever longer queue.

An unknown user name is checked against a dummy hash of the same kind and cost as the dearest user's,
and the answer's text is the same as for a wrong password: neither timing nor text tells whether a
user exists.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import secrets
import string
import time
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, NamedTuple

import bcrypt

from portway.config.policies import BasicAuthConfig
from portway.messages import LocalAnswer, Request
from portway.policies.base import INVALID, MISSING, UNAVAILABLE, Pending, Policy

ALGORITHM: Final = "pbkdf2_sha256"
DEFAULT_ITERATIONS: Final = 100_000  # about 50 ms per check on one core of the test machine
MAX_CACHED: Final = 10_000  # remembered good credentials
MAX_FAILURES: Final = 10  # failed checks per client IP ...
FAILURE_WINDOW: Final = 60.0  # ... per this many seconds, before hashing stops for that IP
MAX_TRACKED_IPS: Final = 10_000
HASH_THREADS: Final = 2  # per worker process: hashing competes with the loop for the CPU
MAX_HASHING: Final = 64  # checks queued or running at once, per policy

_MISSING: Final = MISSING.encode()
_INVALID: Final = INVALID.encode()
_UNAVAILABLE: Final = UNAVAILABLE.encode()
_SALT_CHARS: Final = string.ascii_letters + string.digits
_BAD_CREDENTIALS: Final = "the user name or password is not valid"


class PasswordHash(NamedTuple):
    iterations: int
    salt: bytes
    digest: bytes


class BcryptHash(NamedTuple):
    encoded: bytes  # $2y$<cost>$<salt and hash>, as written
    cost: int  # log2 of the rounds


StoredHash = PasswordHash | BcryptHash
BCRYPT_MAX_PASSWORD: Final = 72  # bytes bcrypt reads of a password


def parse_hash(encoded: str) -> StoredHash:
    """A ``pbkdf2_sha256$...`` line's parts, or a bcrypt hash (the config model has checked its
    shape)."""
    if encoded.startswith("$2"):
        return BcryptHash(encoded.encode("ascii"), int(encoded[4:6]))
    algorithm, iterations, salt, digest = encoded.split("$")
    if algorithm != ALGORITHM:
        raise ValueError(f"not a {ALGORITHM} hash")
    return PasswordHash(int(iterations), salt.encode("utf-8"), base64.b64decode(digest))


def _derive(password: str, salt: bytes, iterations: int) -> bytes:
    secret = unicodedata.normalize("NFC", password).encode("utf-8")
    return hashlib.pbkdf2_hmac("sha256", secret, salt, iterations)


def hash_password(password: str, iterations: int = DEFAULT_ITERATIONS, salt: str = "") -> str:
    """The config line for ``password``: a fresh random salt unless one is given (for tests)."""
    salt = salt or "".join(secrets.choice(_SALT_CHARS) for _ in range(22))
    if "$" in salt:
        raise ValueError("a salt cannot contain '$'")
    digest = _derive(password, salt.encode("utf-8"), iterations)
    return f"{ALGORITHM}${iterations}${salt}${base64.b64encode(digest).decode('ascii')}"


def verify_password(password: str, stored: StoredHash) -> bool:
    if isinstance(stored, BcryptHash):
        secret = unicodedata.normalize("NFC", password).encode("utf-8")
        return bcrypt.checkpw(secret[:BCRYPT_MAX_PASSWORD], stored.encoded)
    derived = _derive(password, stored.salt, stored.iterations)
    return hmac.compare_digest(derived, stored.digest)


def dummy_hash(users: list[StoredHash]) -> StoredHash:
    """What an unknown user's password is checked against: the users' kind at the dearest user's
    cost, matching no password."""
    if isinstance(users[0], BcryptHash):
        cost = max(user.cost for user in users if isinstance(user, BcryptHash))
        # A valid salt (its last character carries 2 bits, so one of .Oeu) and an all-zero hash.
        return BcryptHash(b"$2b$%02d$portwayunknownuserdumu%s" % (cost, b"." * 31), cost)
    iterations = max(user.iterations for user in users if isinstance(user, PasswordHash))
    return PasswordHash(iterations, b"portway-unknown-user", bytes(32))


_executor: ThreadPoolExecutor | None = None


def _hashing_threads() -> ThreadPoolExecutor:
    """The worker's hashing threads, made on first use: after the fork, in the process that
    hashes (threads do not survive a fork)."""
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="portway-password")
    return _executor


def _verify(password: str, stored: StoredHash) -> bool:
    return verify_password(password, stored)  # looked up at call time (tests count the calls)


def _has_control(text: str) -> bool:
    """RFC 7617 §2: user-id and password contain no CTL (U+0000-U+001F, U+007F)."""
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def decode_credentials(token: str) -> tuple[str, str] | None:
    """User-id and password from the base64 token of ``Basic <token>``, None when malformed.

    The user-id ends at the first colon (it cannot contain one; the password can, RFC 7617 §2)."""
    try:
        text = base64.b64decode(token, validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError and non-ASCII input all are
        return None
    user, colon, password = text.partition(":")
    if not colon or _has_control(text):
        return None
    return unicodedata.normalize("NFC", user), password


class BasicAuthPolicy(Policy):
    kind = "basic_auth"

    def __init__(
        self, name: str, config: BasicAuthConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(name)
        self.strip = config.strip_credentials
        self.clock = clock
        self.users = {user.name: parse_hash(user.password_hash) for user in config.users}
        # Unknown users cost what the dearest known user costs, and never match.
        self.dummy = dummy_hash(list(self.users.values()))
        challenge = b'Basic realm="%s", charset="UTF-8"' % config.realm.encode("utf-8")
        self.challenge: Final = (b"www-authenticate", challenge)
        self.cache: dict[bytes, str] = {}  # SHA-256 of the Authorization value -> user
        self.failures: dict[str, list[float]] = {}  # client IP -> [first failure, count]
        self.hashing = 0  # checks handed to the threads and not finished

    def apply(self, request: Request) -> LocalAnswer | Pending | None:
        value = request.header("authorization")
        scheme, _, token = (value or "").strip(" \t").partition(" ")
        if scheme.lower() != "basic":
            # No credentials, or another scheme's: the client is told which one (RFC 9110 §11.6.1).
            return self._refuse("a user name and password (Basic) are required", _MISSING)
        assert value is not None
        key = hashlib.sha256(value.encode("latin-1")).digest()
        user = self.cache.get(key)
        if user is not None:
            request.consumer = user
            return None
        credentials = decode_credentials(token.strip(" \t"))
        if credentials is None:
            return self._refuse(
                "malformed Basic credentials (base64 of user-id:password)", _INVALID
            )
        now = self.clock()
        wait = self._throttled(request.client_ip, now)
        if wait:
            return self._refuse(
                "too many failed attempts from this address; try again later",
                _INVALID,
                (b"retry-after", b"%d" % math.ceil(wait)),
            )
        name, password = credentials
        stored = self.users.get(name)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (the CLI, unit tests): nobody to keep waiting
            return self._checked(
                request, key, name, stored, _verify(password, stored or self.dummy)
            )
        if self.hashing >= MAX_HASHING:
            return LocalAnswer(
                503,
                "too many password checks in progress; try again shortly",
                _UNAVAILABLE,
                [(b"retry-after", b"1")],
            )
        self.hashing += 1
        hashing = loop.run_in_executor(_hashing_threads(), _verify, password, stored or self.dummy)
        verdict: Pending = loop.create_future()

        def hashed(done: asyncio.Future[bool]) -> None:
            self.hashing -= 1
            if verdict.done():  # cancelled: the client left, or the chain stopped waiting
                return
            if done.cancelled():
                verdict.cancel()
            elif (error := done.exception()) is not None:
                verdict.set_exception(error)
            else:
                verdict.set_result(self._checked(request, key, name, stored, done.result()))

        def abandoned(done: Pending) -> None:
            if done.cancelled():
                hashing.cancel()  # not started yet: the thread is spared; started: it finishes

        hashing.add_done_callback(hashed)
        verdict.add_done_callback(abandoned)
        return verdict

    def _checked(
        self, request: Request, key: bytes, name: str, stored: StoredHash | None, ok: bool
    ) -> LocalAnswer | None:
        """The verdict once the hash is known: remember a success, count a failure."""
        if not ok or stored is None:
            self._failed(request.client_ip, self.clock())
            return self._refuse(_BAD_CREDENTIALS, _INVALID)
        if len(self.cache) >= MAX_CACHED:
            del self.cache[next(iter(self.cache))]  # the oldest remembered
        self.cache[key] = name
        request.consumer = name
        return None

    def _refuse(self, detail: str, cause: bytes, *extra: tuple[bytes, bytes]) -> LocalAnswer:
        return LocalAnswer(401, detail, cause, [self.challenge, *extra])

    def _throttled(self, ip: str, now: float) -> float:
        """Seconds until ``ip`` may have its passwords checked again; 0: now."""
        entry = self.failures.get(ip)
        if entry is None:
            return 0.0
        elapsed = now - entry[0]
        if elapsed >= FAILURE_WINDOW:
            del self.failures[ip]
            return 0.0
        return FAILURE_WINDOW - elapsed if entry[1] >= MAX_FAILURES else 0.0

    def _failed(self, ip: str, now: float) -> None:
        entry = self.failures.get(ip)
        if entry is not None and now - entry[0] < FAILURE_WINDOW:
            entry[1] += 1
            return
        failures = self.failures
        if entry is None and len(failures) >= MAX_TRACKED_IPS:
            for stale in [k for k, (first, _) in failures.items() if now - first >= FAILURE_WINDOW]:
                del failures[stale]
            if len(failures) >= MAX_TRACKED_IPS:
                del failures[next(iter(failures))]
        failures[ip] = [now, 1]

    def drops(self) -> frozenset[bytes]:
        return frozenset({b"authorization"}) if self.strip else frozenset()
