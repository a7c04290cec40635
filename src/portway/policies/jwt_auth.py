"""Bearer JSON Web Tokens (RFC 7519, sent as RFC 6750 bearer tokens), verified with PyJWT.

The key is read once, when the policy is built: a shared secret, a PEM public key (or certificate),
or a JWK set whose keys are chosen by the token header's ``kid`` (a token without ``kid`` may use a
set of exactly one key). PyJWT checks the signature against the configured ``algorithms`` only,
so ``alg: none`` and an HS256 token "signed" with a public key (algorithm confusion) are refused;
the config model also never lets HS* and a key file meet. Each key is given to PyJWT as a key
object, never as a PyJWK, and a JWK's own ``alg`` (RFC 7517 §4.4) must match the token's, so a key
is only ever used with an algorithm it fits.

Answers follow RFC 6750 §3: no token (or another scheme's credentials) gets a bare ``Bearer
realm="<policy>"`` challenge; a token that does not verify gets ``error="invalid_token"`` with a
short ``error_description`` of our own wording (never the library's text, which may quote claims).
An expired token is counted apart (``expired_credentials``): clients refreshing too late are a
different problem from forged tokens.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import jwt

from portway.config.jwt_keys import (
    Jwk,
    VerifyingKey,
    key_fits,
    load_jwk_set,
    load_public_key,
)
from portway.config.policies import CONSUMER_NAME, JwtConfig
from portway.messages import LocalAnswer, Request
from portway.policies.base import EXPIRED, INVALID, MISSING, Policy

if TYPE_CHECKING:
    from jwt.types import Options

_MISSING: Final = MISSING.encode()
_INVALID: Final = INVALID.encode()
_EXPIRED: Final = EXPIRED.encode()
_time: Final = time.time
MAX_CACHED: Final = 10_000  # verified tokens remembered per policy and worker

# error_description for each PyJWT failure, most specific class first.
_DESCRIPTIONS: Final[tuple[tuple[type[jwt.PyJWTError], str], ...]] = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.InvalidAudienceError, "the token is not for this audience"),
    (jwt.InvalidIssuerError, "the token is from another issuer"),
    (jwt.InvalidAlgorithmError, "the token's algorithm is not accepted"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.InvalidIssuedAtError, "the token's iat claim is not a number"),
    (jwt.DecodeError, "the token is malformed"),
)


def quotable(text: str) -> str:
    """``text`` reduced to what RFC 6750 §3 allows in ``error_description`` (printable ASCII but
    ``"`` and ``\\``)."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)


class NoKeyError(jwt.InvalidTokenError):
    """No configured key may verify this token; the message is the ``error_description``."""


def describe(error: jwt.PyJWTError) -> str:
    if isinstance(error, NoKeyError):
        return str(error)
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"the token has no {quotable(error.claim)} claim"
    for kind, description in _DESCRIPTIONS:
        if isinstance(error, kind):
            return description
    return "the token is not valid"


class JwtPolicy(Policy):
    kind = "jwt"

    def __init__(self, name: str, config: JwtConfig) -> None:
        super().__init__(name)
        self.algorithms: Sequence[str] = tuple(config.algorithms)
        self.header = config.header
        self.bearer_only = config.header == "authorization"
        self.strip = config.strip_credentials
        self.consumer_claim = config.consumer_claim
        self.audience = list(config.audiences) or None
        self.issuer = config.issuer
        self.leeway = config.leeway
        self.options: Options = {
            "require": list(config.required_claims),
            "verify_aud": self.audience is not None,  # else a token with any aud is fine
            # Too short a key fails the token instead of warning on every request; the config
            # checks refuse such keys before they get here.
            "enforce_minimum_key_length": True,
        }
        self.secret: bytes | None = None
        self.key: VerifyingKey | None = None
        self.by_kid: dict[str, Jwk] = {}
        self.only: Jwk | None = None  # the key of a one-key set, for tokens without kid
        if config.secret is not None:
            self.secret = config.secret.encode("utf-8")
        elif config.public_key_file is not None:
            self.key = load_public_key(config.public_key_file)
        elif config.jwks_file is not None:
            keys = load_jwk_set(config.jwks_file)
            self.by_kid = {k.kid: k for k in keys if k.kid is not None}
            self.only = keys[0] if len(keys) == 1 else None
        self.challenge: Final = b'Bearer realm="%s"' % name.encode("ascii")
        # Tokens that verified: token -> (consumer, nbf, exp). A client sends one token for many
        # requests, and a signature check costs tens of µs (RSA, PyJWT's claim checks): the same
        # bytes verify the same way, so only the time claims are checked again.
        self.verified: dict[str, tuple[str, float, float]] = {}

    def apply(self, request: Request) -> LocalAnswer | None:
        token = self._token(request.header(self.header))
        if not token:
            return LocalAnswer(
                401,
                f"a bearer token is required in the {self.header} header",
                _MISSING,
                [(b"www-authenticate", self.challenge)],
            )
        known = self.verified.get(token)
        if known is not None:
            now = _time()
            if known[1] - self.leeway <= now < known[2] + self.leeway:
                request.consumer = known[0]
                return None
            del self.verified[token]  # expired since: verified again, for the right answer
        try:
            claims = jwt.decode(
                token,
                self._key_for(token),
                algorithms=self.algorithms,
                options=self.options,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
            )
        except jwt.PyJWTError as error:
            expired = isinstance(error, jwt.ExpiredSignatureError)
            return self._invalid(describe(error), _EXPIRED if expired else _INVALID)
        except (ValueError, TypeError):  # a library edge case must not become a 500
            return self._invalid("the token is not valid", _INVALID)
        consumer = _consumer(claims.get(self.consumer_claim))
        if consumer is None:
            return self._invalid(
                f"consumer claim {quotable(self.consumer_claim)} is missing or not a valid name",
                _INVALID,
            )
        request.consumer = consumer
        self._remember(token, consumer, claims)
        return None

    def _remember(self, token: str, consumer: str, claims: dict[str, Any]) -> None:
        verified = self.verified
        if len(verified) >= MAX_CACHED:
            del verified[next(iter(verified))]  # the oldest remembered
        nbf, exp = claims.get("nbf"), claims.get("exp")
        # PyJWT has checked that both are numbers when present.
        verified[token] = (
            consumer,
            float(nbf) if nbf is not None else -math.inf,
            float(exp) if exp is not None else math.inf,
        )

    def _token(self, value: str | None) -> str:
        """The token in the header's value; "" when there is none (or another scheme's)."""
        if not value:
            return ""
        scheme, space, rest = value.strip(" \t").partition(" ")
        if space and scheme.lower() == "bearer":
            return rest.strip(" \t")
        if self.bearer_only:
            return ""  # Basic, Digest, ...: not credentials this policy understands
        return value.strip(" \t")

    def _key_for(self, token: str) -> VerifyingKey | bytes:
        """The key the token's signature must verify with; raises a PyJWTError if none fits."""
        if self.secret is not None:
            return self.secret  # PyJWT refuses any alg outside the (HS*-only) list
        header = jwt.get_unverified_header(token)  # DecodeError when not a JWS
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise jwt.InvalidAlgorithmError("alg not accepted")
        if self.key is not None:
            jwk = Jwk(None, None, self.key)
        else:
            kid = header.get("kid")
            if kid is None:
                if self.only is None:
                    raise NoKeyError("the token has no kid and the key set has several keys")
                jwk = self.only
            elif isinstance(kid, str) and kid in self.by_kid:
                jwk = self.by_kid[kid]
            else:
                raise NoKeyError("the token's kid names no known key")
        if (jwk.alg or alg) != alg or not key_fits(alg, jwk.key):
            raise NoKeyError(f"the key cannot verify {quotable(alg)}")
        return jwk.key

    def _invalid(self, description: str, cause: bytes) -> LocalAnswer:
        challenge = b'%s, error="invalid_token", error_description="%s"' % (
            self.challenge,
            description.encode("ascii"),
        )
        return LocalAnswer(
            401, f"bearer token refused: {description}", cause, [(b"www-authenticate", challenge)]
        )

    def drops(self) -> frozenset[bytes]:
        return frozenset({self.header.encode("ascii")}) if self.strip else frozenset()


def _consumer(value: Any) -> str | None:
    """The consumer named by a claim's value: strings and integers, in the safe alphabet."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text if CONSUMER_NAME.fullmatch(text) else None
