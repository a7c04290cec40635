"""Policies as declared: named checks that routes apply between routing and the service.

A policy is defined once under ``policies:`` with exactly one kind (``KINDS``; the ``cors``
model lives in ``config.cors``) and listed by name in a route's ``policies``. The order they run in is
fixed by kind (``policies.registry``), not by the order a route lists them: authentication first,
so that a rate limit can count per consumer and an anonymous flood spends nobody's quota.
"""

from __future__ import annotations

import base64
import re
from typing import Annotated, Final, Literal, Self
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from portway.config.cors import CorsConfig
from portway.config.tls import UpstreamTlsConfig
from portway.config.types import SECRET, Cidr, Duration, FilePath


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


# Consumer names go into logs, metrics labels and an upstream header: a safe alphabet. \Z, not $:
# $ also matches before a final newline, which a JWT claim could carry into the header block.
CONSUMER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}\Z")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 §5.1 token
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def _consumer(value: str) -> str:
    if not CONSUMER_NAME.match(value):
        raise ValueError(
            f"consumer name {value!r} must be 1-128 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return value


def _header_name(value: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError(f"not a valid header name: {value!r}")
    return value.lower()


ConsumerName = Annotated[str, AfterValidator(_consumer)]
HeaderName = Annotated[str, AfterValidator(_header_name)]


class ApiKeyEntry(_Model):
    """One API key and who it belongs to: exactly one of key, key_sha256."""

    consumer: ConsumerName = Field(
        description="Who presents this key (logs, metrics, upstream header)."
    )
    key: str | None = Field(
        None,
        description="The key itself (at least 16 characters).",
        json_schema_extra=SECRET,
    )
    key_sha256: str | None = Field(
        None, description="SHA-256 of the key, 64 hex digits, so the file holds no secret."
    )

    @field_validator("key")
    @classmethod
    def _long_enough(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("an API key needs at least 16 characters")
        return value

    @field_validator("key_sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256_HEX.match(value.lower()):
            raise ValueError("key_sha256 must be 64 hex digits")
        return value.lower() if value is not None else None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("set exactly one of key or key_sha256")
        return self


class ApiKeyConfig(_Model):
    """Clients identify themselves with a key in a header (or, if allowed, a query parameter)."""

    header: HeaderName = Field("x-api-key", description="Request header that carries the key.")
    query: str | None = Field(
        None, description="Query parameter that may carry the key instead; none: header only."
    )
    keys: list[ApiKeyEntry] = Field(min_length=1, description="The accepted keys.")
    strip_credentials: bool = Field(
        True, description="Remove the key header from the request sent upstream."
    )


_BCRYPT: Final = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")


def hash_kind(password_hash: str) -> str:
    """``bcrypt`` or ``pbkdf2_sha256``: the kind of a hash the model accepted."""
    return "bcrypt" if password_hash.startswith("$2") else "pbkdf2_sha256"


class BasicUser(_Model):
    """One user of HTTP Basic authentication."""

    name: ConsumerName = Field(description="User name (also the consumer name).")
    password_hash: str = Field(
        description="`pbkdf2_sha256$<iterations>$<salt>$<hash>` as `portway hash-password` "
        "prints it (Django's format): the salt is text whose UTF-8 bytes are the PBKDF2 salt, "
        "the hash the standard base64 of the 32-byte PBKDF2-HMAC-SHA256 output. Or a bcrypt "
        "hash, `$2y$`, `$2b$` or `$2a$` (an htpasswd file's, `htpasswd -B`).",
        # A hash, but of a password a person chose: worth an offline guess, like /etc/shadow.
        json_schema_extra=SECRET,
    )

    @field_validator("password_hash")
    @classmethod
    def _format(cls, value: str) -> str:
        if value.startswith("$2"):
            if not _BCRYPT.fullmatch(value):
                raise ValueError(
                    "expected a bcrypt hash: $2y$, $2b$ or $2a$, a cost from 04 to 31, $, then 53 "
                    "characters of ./A-Za-z0-9"
                )
            return value
        parts = value.split("$")
        if len(parts) != 4 or parts[0] != "pbkdf2_sha256" or not parts[1].isdigit():
            raise ValueError(
                "expected pbkdf2_sha256$<iterations>$<salt>$<hash> (portway hash-password) or a "
                "bcrypt hash ($2y$...)"
            )
        if int(parts[1]) < 1000:
            raise ValueError("at least 1000 PBKDF2 iterations")
        if not parts[2]:
            raise ValueError("the salt of a password hash is empty")
        try:
            digest = base64.b64decode(parts[3], validate=True)
        except ValueError:
            digest = b""
        if len(digest) != 32:
            # Caught here, not when a worker builds the policy, or every login would just fail.
            raise ValueError("the hash part must be the base64 of 32 bytes (PBKDF2-SHA256)")
        return value


class BasicAuthConfig(_Model):
    """HTTP Basic authentication (RFC 7617) against a list of users."""

    realm: str = Field("portway", description="The realm named in `WWW-Authenticate`.")
    users: list[BasicUser] = Field(min_length=1, description="The accepted users.")
    strip_credentials: bool = Field(
        True, description="Remove `Authorization` from the request sent upstream."
    )

    @field_validator("realm")
    @classmethod
    def _quotable(cls, value: str) -> str:
        if '"' in value or "\\" in value or not value.isprintable():
            raise ValueError("a realm is printable text without quotes or backslashes")
        return value

    @field_validator("users")
    @classmethod
    def _one_hash_kind(cls, users: list[BasicUser]) -> list[BasicUser]:
        # An unknown user is checked against a dummy hash of the users' kind and cost; with two
        # kinds its timing would match only one, and tell the other kind's names apart.
        kinds = sorted({hash_kind(user.password_hash) for user in users})
        if len(kinds) > 1:
            raise ValueError(
                f"the users' password hashes mix {' and '.join(kinds)}: use one kind per policy, "
                "so that timing never tells whether a user exists"
            )
        return users


JwtAlgorithm = Literal[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512", "EdDSA",
]  # fmt: skip


class JwtConfig(_Model):
    """Bearer JSON Web Tokens (RFC 7519) verified with a shared secret, a public key or a JWKS."""

    algorithms: list[JwtAlgorithm] = Field(
        min_length=1, description="Accepted `alg` values; never `none`."
    )
    secret: str | None = Field(
        None, description="Shared secret for HS* algorithms.", json_schema_extra=SECRET
    )
    public_key_file: FilePath | None = Field(
        None, description="PEM public key for RS*, PS*, ES* or EdDSA."
    )
    jwks_file: FilePath | None = Field(
        None, description="A JSON Web Key Set file; the token's `kid` picks the key."
    )
    issuer: str | None = Field(None, description="Required `iss`; none: not checked.")
    audiences: list[str] = Field([], description="`aud` must contain one of these; empty: any.")
    required_claims: list[str] = Field(
        ["exp"], description="Claims a token must carry (`exp` is always checked when present)."
    )
    leeway: Duration = Field(30.0, description="Clock skew allowed on `exp`, `nbf` and `iat`.")
    consumer_claim: str = Field("sub", description="Claim whose value names the consumer.")
    header: HeaderName = Field(
        "authorization", description="Header carrying `Bearer <token>` (or the bare token)."
    )
    strip_credentials: bool = Field(
        False, description="Remove the token header from the request sent upstream."
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        sources = [self.secret is not None, self.public_key_file is not None, self.jwks_file]
        if sum(bool(s) for s in sources) != 1:
            raise ValueError("set exactly one of secret, public_key_file or jwks_file")
        symmetric = {a for a in self.algorithms if a.startswith("HS")}
        if self.secret is not None and symmetric != set(self.algorithms):
            raise ValueError("a secret verifies HS256/HS384/HS512 only")
        if self.secret is None and symmetric:
            # A public key used as an HMAC secret is the classic algorithm-confusion attack.
            raise ValueError("HS* algorithms need a secret, never a public key")
        if self.secret is not None and len(self.secret) < 32:
            raise ValueError("an HMAC secret needs at least 32 characters")
        if self.secret is not None:
            # RFC 7518 §3.2: a key at least as long as the hash output (HS384: 48, HS512: 64).
            needed = max(int(a[2:]) // 8 for a in self.algorithms)
            if len(self.secret.encode()) < needed:
                raise ValueError(f"an HMAC secret for these algorithms needs {needed} bytes")
        return self


RateLimitKey = Literal["client_ip", "consumer", "header", "route"]


class RateLimitConfig(_Model):
    """At most ``requests`` per ``per`` for each key (a sliding window); more answers 429."""

    requests: Annotated[int, Field(ge=1)] = Field(description="Requests allowed per window.")
    per: Duration = Field(description="The window, e.g. `1s`, `1m`, `1h`.")
    key: RateLimitKey = Field(
        "client_ip",
        description="What is counted separately: the client IP, the authenticated consumer, "
        "a header's value, or the whole route.",
    )
    header: HeaderName | None = Field(
        None, description="With `key: header`: the header counted by."
    )
    store: Literal["local", "redis"] = Field(
        "local",
        description="`local`: counted in each worker process; `redis`: shared by every worker "
        "and replica through the `redis` section.",
    )
    response_headers: bool = Field(
        True, description="Send `RateLimit` and `RateLimit-Policy` (IETF httpapi draft)."
    )
    max_keys: Annotated[int, Field(ge=1)] = Field(
        100_000, description="Keys tracked per worker; the least recently seen are forgotten."
    )

    @model_validator(mode="after")
    def _key_needs(self) -> Self:
        if self.per <= 0:
            raise ValueError("per must be a positive duration")
        if (self.key == "header") != (self.header is not None):
            raise ValueError("key: header and header: <name> go together")
        return self


class IpFilterConfig(_Model):
    """Which client addresses may use the route: `deny` wins over `allow`; with an `allow` list,
    only the addresses in it. The client address is the one `server.trusted_proxies` reveal."""

    allow: list[Cidr] = Field([], description="Networks allowed; empty: every address not denied.")
    deny: list[Cidr] = Field([], description="Networks refused with 403.")

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not self.allow and not self.deny:
            raise ValueError("set allow, deny or both")
        return self


# Fields a forward-auth service may not hand to the upstream: they frame or route the request.
_NOT_COPIED = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te",
     "trailer", "proxy-connection", "x-portway-consumer"}
)  # fmt: skip


class ForwardAuthConfig(_Model):
    """Ask an auth service about every request (Traefik ForwardAuth, nginx `auth_request`): a GET
    to `url` with `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`, `-For` and the selected request
    headers. A 2xx answer admits the request; any other answer is what the client gets (status,
    `WWW-Authenticate`, `Location`, `Set-Cookie`, a short body): that is how login redirects work.
    No answer in time, or none at all, is 503 (fail closed)."""

    url: str = Field(description="The auth service's check URL, `http://` or `https://`.")
    timeout: Duration = Field(1.0, description="The longest the auth service is waited for.")
    request_headers: list[HeaderName] = Field(
        ["authorization", "cookie"],
        description="Request headers sent on to the auth service (when the request has them).",
    )
    copy_headers: list[HeaderName] = Field(
        [],
        description="Headers of a 2xx auth answer put on the upstream request; the client's own "
        "copies of them are removed, so it cannot forge them.",
    )
    consumer_header: HeaderName | None = Field(
        None,
        description="Header of a 2xx auth answer whose value names the consumer (logs, metrics, "
        "`x-portway-consumer`); a value that is not a valid consumer name is ignored.",
    )
    tls: UpstreamTlsConfig | None = Field(
        None,
        description="TLS to an `https://` auth service, as a service's `tls`: the CA its "
        "certificate must chain to, a client certificate (mTLS), the name verified; none: the "
        "system CAs and the URL's host.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018  (raises ValueError when it is not a number)
        except ValueError as exc:
            raise ValueError(f"not a valid URL: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise ValueError("the auth service URL must be http:// or https://")
        if not parts.hostname:
            raise ValueError("the auth service URL needs a host")
        if parts.username is not None or parts.fragment or not value.isascii() or " " in value:
            raise ValueError("the auth service URL takes no user info, fragment or spaces")
        return value

    @field_validator("copy_headers")
    @classmethod
    def _copyable(cls, value: list[str]) -> list[str]:
        refused = sorted(set(value) & _NOT_COPIED)
        if refused:
            raise ValueError(f"cannot copy {', '.join(refused)}: framing or gateway headers")
        return value

    @model_validator(mode="after")
    def _positive(self) -> Self:
        if self.timeout <= 0:
            raise ValueError("timeout must be a positive duration")
        if self.tls is not None and not self.url.startswith("https://"):
            raise ValueError("tls needs an https:// url")
        return self


# The kinds a policy may have, each a field of PolicyConfig below.
KINDS = ("ip_filter", "cors", "api_key", "basic_auth", "jwt", "forward_auth", "rate_limit")


class PolicyConfig(_Model):
    """One named policy: exactly one of its kinds."""

    ip_filter: IpFilterConfig | None = Field(None, description="Client address allow/deny lists.")
    cors: CorsConfig | None = Field(None, description="Cross-origin requests from browsers.")
    api_key: ApiKeyConfig | None = Field(None, description="API keys.")
    basic_auth: BasicAuthConfig | None = Field(None, description="HTTP Basic authentication.")
    jwt: JwtConfig | None = Field(None, description="Bearer JSON Web Tokens.")
    forward_auth: ForwardAuthConfig | None = Field(
        None, description="An external auth service decides (ForwardAuth, `auth_request`)."
    )
    rate_limit: RateLimitConfig | None = Field(None, description="Requests per window, per key.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if sum(kind is not None for kind in self.kinds()) != 1:
            raise ValueError(f"set exactly one of {', '.join(KINDS)}")
        return self

    def kinds(self) -> tuple[object | None, ...]:
        return tuple(getattr(self, name) for name in KINDS)

    @property
    def kind(self) -> str:
        for name in KINDS:
            if getattr(self, name) is not None:
                return name
        raise AssertionError("validated to have exactly one kind")


class RedisConfig(_Model):
    """The Redis server that `store: redis` rate limits share their counts through."""

    url: str = Field(
        "redis://127.0.0.1:6379/0", description="`redis://` or `rediss://` URL, with db number."
    )
    key_prefix: str = Field("portway", description="Prefix of every key Portway writes.")
    sync_interval: Duration = Field(
        0.1,
        description="How often each worker adds its counts to Redis and reads the totals; a "
        "limit can be exceeded by what all replicas admit in one interval.",
    )
    timeout: Duration = Field(0.5, description="A Redis command not answered in time fails.")

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value
