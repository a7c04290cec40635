"""ingress-nginx's access annotations -> native route policies (``ip_filter``, ``rate_limit``,
``cors``, ``forward_auth``), one set per Ingress, shared by every route of that Ingress.

Why policies and not service settings: these annotations guard *requests* (who may ask, how often,
from which page), which is what a route's ``policies`` do; the Ingress's services stay shared.

Semantics followed (ingress-nginx docs, "Annotations"; its ``ipallowlist``, ``ipdenylist``,
``ratelimit`` and ``cors`` parsers):

* ``allowlist-source-range`` (formerly ``whitelist-source-range``, still read; the new name wins
  when both are set) and ``denylist-source-range``: comma-separated CIDRs or addresses ->
  ``ip_filter`` (deny wins over allow, as nginx lists its ``deny`` lines first). A value that is
  not a list of networks refuses the Ingress: ingress-nginx denies the location then, and an
  Ingress that asked to be closed must never be served open.
* ``limit-rps`` / ``limit-rpm``: ``rate_limit`` keyed by client IP, that many requests per 1 s /
  1 min (both, when both are set). ingress-nginx's ``limit_req`` also admits a burst of
  ``limit-burst-multiplier`` (default 5) times the rate; the native sliding window has no burst,
  so bursts above the rate are answered 429 (nginx's default is 503). ``0`` means no limit, as in
  ingress-nginx.
* ``enable-cors: "true"`` with ``cors-allow-origin`` (default ``*``), ``cors-allow-methods``,
  ``cors-allow-headers``, ``cors-expose-headers``, ``cors-allow-credentials`` (default true) and
  ``cors-max-age`` (default 1728000 s) -> ``cors``. With the origin ``*`` ingress-nginx sends
  ``Access-Control-Allow-Origin: *`` *and* ``-Allow-Credentials: true``, which browsers refuse for
  credentialed requests (Fetch §3.2.5): the native policy is ``*`` without credentials, what a
  browser actually gets. Where ingress-nginx silently falls back to its defaults on a value it
  cannot read, Portway refuses the Ingress, as for every other annotation.

* ``auth-url`` (+ ``auth-response-headers``, comma-separated) -> ``forward_auth``: the URL is
  asked about every request (a GET with ``X-Forwarded-*``, ``Authorization`` and ``Cookie``); 2xx
  admits and copies the listed response headers onto the upstream request, any other answer goes to
  the client as it is, no answer is 503. ingress-nginx's ``auth_request`` passes every request
  header and expands nginx variables (``$host``) in the URL: a URL with a ``$`` refuses the
  Ingress (it would be asked literally), as does any URL that is not ``http(s)://``: an Ingress
  that asked for authentication is never served without it. ``auth-method``, ``auth-signin`` and
  the other ``auth-*`` keys are not mapped (a warning says so).
* ``auth-type: basic`` with ``auth-secret`` (a Secret of the Ingress's namespace; ``auth-secret-type``
  ``auth-file``, the default: its key ``auth`` is an htpasswd file, or ``auth-map``: one key per
  user, the hash as its value) and ``auth-realm`` -> ``basic_auth``, built by ``translate`` from the
  Secret (``basic_auth_users``). Only bcrypt hashes are accepted (``htpasswd -B``): ``$apr1$`` MD5,
  ``{SHA}`` and crypt are too weak to check, and an Ingress whose Secret holds one is not served
  (never served open). ``auth-type: digest`` is refused likewise.

Policies are named ``ingress.<namespace>.<name>.<what>``: Kubernetes names are lower-case DNS
names, and a namespace has no dot, so the name is valid, deterministic and unique per Ingress.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from portway.config.cors import CorsConfig
from portway.config.policies import (
    ForwardAuthConfig,
    IpFilterConfig,
    PolicyConfig,
    RateLimitConfig,
)

NGINX = "nginx.ingress.kubernetes.io/"
ALLOW, WHITELIST, DENY = "allowlist-source-range", "whitelist-source-range", "denylist-source-range"
CORS_KEYS = ("cors-allow-origin", "cors-allow-methods", "cors-allow-headers",
             "cors-expose-headers", "cors-allow-credentials", "cors-max-age")  # fmt: skip
# The ingress-nginx annotations this module reads (annotations.NGINX_SUPPORTED includes them).
NGINX_KEYS = frozenset(
    {ALLOW, WHITELIST, DENY, "limit-rps", "limit-rpm", "limit-burst-multiplier", "enable-cors",
     *CORS_KEYS, "auth-url", "auth-response-headers", "auth-type", "auth-secret",
     "auth-secret-type", "auth-realm"}
)  # fmt: skip
_SERVED_WITHOUT = "not supported yet: the Ingress serves without it"
NOT_OPEN = "; the Ingress is not served rather than served without authentication"
# Annotations refused whatever their value (none today: auth-type is read, see basic_auth_secret).
REFUSED: dict[str, str] = {}
# Annotations of this family not mapped yet, with a message more precise than the generic one.
NOT_YET = {
    "limit-connections": "not supported yet: Portway has no limit of concurrent connections per "
    "client address; the Ingress serves without it",
    "limit-whitelist": "not supported yet: these addresses are rate limited like any other",
    "limit-rate": "not supported yet (bandwidth limit): the Ingress serves without it",
    "limit-rate-after": "not supported yet (bandwidth limit): the Ingress serves without it",
}
DEFAULT_METHODS = "GET, PUT, POST, DELETE, PATCH, OPTIONS"
DEFAULT_HEADERS = ("DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,"
                   "Content-Type,Range,Authorization")  # fmt: skip
DEFAULT_MAX_AGE = 1728000
_CORS_FIELD_KEY = {"allow_origins": "cors-allow-origin", "allow_methods": "cors-allow-methods",
                   "allow_headers": "cors-allow-headers", "expose_headers": "cors-expose-headers",
                   "max_age": "cors-max-age"}  # fmt: skip

Report = Callable[..., None]  # _Annotations.report(key, message, severity="error")


def read_policies(annotations: dict[str, str], prefix: str, report: Report) -> dict[str, Any]:
    """The ``Policy`` field ``policies``: named ``PolicyConfig``s (``prefix.<what>``) for the
    access annotations; problems go to ``report``."""
    policies: dict[str, PolicyConfig] = {}
    ip_filter = _ip_filter(annotations, report)
    if ip_filter is not None:
        policies[f"{prefix}.ip-filter"] = PolicyConfig(ip_filter=ip_filter)
    for name, per in (("limit-rps", 1.0), ("limit-rpm", 60.0)):
        limit = _rate_limit(annotations, name, per, report)
        if limit is not None:
            policies[f"{prefix}.{name.removeprefix('limit-')}"] = PolicyConfig(rate_limit=limit)
    if NGINX + "limit-burst-multiplier" in annotations:
        report(NGINX + "limit-burst-multiplier", "has no effect: Portway's sliding window admits "
               "no burst above limit-rps / limit-rpm (more answers 429)", "warning")  # fmt: skip
    cors = _cors(annotations, report)
    if cors is not None:
        policies[f"{prefix}.cors"] = PolicyConfig(cors=cors)
    forward_auth = _forward_auth(annotations, report)
    if forward_auth is not None:
        policies[f"{prefix}.auth"] = PolicyConfig(forward_auth=forward_auth)
    return {"policies": policies} if policies else {}


def _messages(exc: ValidationError) -> list[tuple[str, str]]:
    """(first field of the location, message) of each error, without pydantic's prefix."""
    return [
        (str(error["loc"][0]) if error["loc"] else "", _message(error["msg"]))
        for error in exc.errors(include_url=False)
    ]


def _message(text: str) -> str:
    return text.removeprefix("Value error, ")


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _ip_filter(annotations: dict[str, str], report: Report) -> IpFilterConfig | None:
    allow_key = next((NGINX + k for k in (ALLOW, WHITELIST) if NGINX + k in annotations), None)
    if allow_key == NGINX + ALLOW and NGINX + WHITELIST in annotations:
        report(NGINX + WHITELIST, f"{ALLOW} is set too and wins", "warning")
    keys = {"allow": allow_key, "deny": NGINX + DENY if NGINX + DENY in annotations else None}
    lists: dict[str, list[str]] = {}
    for field, key in keys.items():
        if key is not None:
            lists[field] = _items(annotations[key])
            if not lists[field]:
                report(key, "no address or network given (expected CIDRs separated by commas)")
    if not lists or not all(lists.values()):
        return None
    try:
        return IpFilterConfig.model_validate(lists)
    except ValidationError as exc:
        for field, message in _messages(exc):
            report(keys.get(field) or allow_key or NGINX + DENY, message)
        return None


def _rate_limit(
    annotations: dict[str, str], name: str, per: float, report: Report
) -> RateLimitConfig | None:
    value = annotations.get(NGINX + name)
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()):
        report(NGINX + name, f"expected a whole number of requests, got {value!r}")
        return None
    if int(text) == 0:
        return None  # ingress-nginx: no limit
    return RateLimitConfig(requests=int(text), per=per, key="client_ip")


def _boolean(annotations: dict[str, str], name: str, default: bool, report: Report) -> bool:
    value = annotations.get(NGINX + name)
    if value is None:
        return default
    if value.strip().lower() not in ("true", "false"):
        report(NGINX + name, f'expected "true" or "false", got {value!r}')
        return default
    return value.strip().lower() == "true"


def _cors(annotations: dict[str, str], report: Report) -> CorsConfig | None:
    enabled = _boolean(annotations, "enable-cors", False, report)
    if not enabled:
        for name in CORS_KEYS:
            if NGINX + name in annotations:
                report(NGINX + name, 'has no effect without enable-cors: "true"', "warning")
        return None
    origins = _items(annotations.get(NGINX + "cors-allow-origin", "")) or ["*"]
    if "*" in origins and len(origins) > 1:
        report(NGINX + "cors-allow-origin", "'*' allows every origin: the others are redundant",
               "warning")  # fmt: skip
        origins = ["*"]
    credentials = _boolean(annotations, "cors-allow-credentials", True, report)
    if credentials and origins == ["*"]:
        credentials = False  # what browsers make of ingress-nginx's `*` with credentials
        if annotations.get(NGINX + "cors-allow-credentials", "").strip().lower() == "true":
            report(NGINX + "cors-allow-credentials", "credentials are never allowed for every "
                   "origin ('*'; browsers refuse it): list the origins in cors-allow-origin. "
                   "Served without credentials", "warning")  # fmt: skip
    fields: dict[str, Any] = {
        "allow_origins": origins,
        "allow_methods": _items(annotations.get(NGINX + "cors-allow-methods", ""))
        or _items(DEFAULT_METHODS),
        "allow_headers": _items(annotations.get(NGINX + "cors-allow-headers", ""))
        or _items(DEFAULT_HEADERS),
        "expose_headers": _items(annotations.get(NGINX + "cors-expose-headers", "")),
        "allow_credentials": credentials,
    }
    max_age = annotations.get(NGINX + "cors-max-age", str(DEFAULT_MAX_AGE)).strip()
    if not (max_age.isascii() and max_age.isdigit()):
        report(NGINX + "cors-max-age", f"expected whole seconds, got {max_age!r}")
        return None
    fields["max_age"] = float(max_age)
    try:
        return CorsConfig.model_validate(fields)
    except ValidationError as exc:
        for field, message in _messages(exc):
            report(NGINX + _CORS_FIELD_KEY.get(field, "enable-cors"), message)
        return None


def _forward_auth(annotations: dict[str, str], report: Report) -> ForwardAuthConfig | None:
    url = annotations.get(NGINX + "auth-url")
    copied = annotations.get(NGINX + "auth-response-headers")
    if url is None:
        if copied is not None:
            report(NGINX + "auth-response-headers", "has no effect without auth-url", "warning")
        return None
    if "$" in url:
        report(NGINX + "auth-url", "nginx variables ($host, $request_uri, ...) are not expanded: "
               "give a fixed URL (the request is described in X-Forwarded-* headers)" + NOT_OPEN)  # fmt: skip
        return None
    fields: dict[str, Any] = {"url": url.strip(), "copy_headers": _items(copied or "")}
    try:
        return ForwardAuthConfig.model_validate(fields)
    except ValidationError as exc:
        for field, message in _messages(exc):
            key = "auth-response-headers" if field == "copy_headers" else "auth-url"
            report(NGINX + key, message + (NOT_OPEN if key == "auth-url" else ""))
        return None


@dataclass(frozen=True, slots=True)
class BasicAuthSecret:
    """``auth-type: basic``: where the users are; ``translate`` reads the Secret."""

    name: str  # a Secret of the Ingress's namespace
    per_key: bool  # auth-map: one key per user; else auth-file: the key "auth" is an htpasswd file
    realm: str


def basic_auth_secret(
    annotations: dict[str, str], namespace: str, report: Report
) -> BasicAuthSecret | None:
    """The Secret ``auth-type: basic`` names, or None (and an error when the annotations ask for
    authentication that cannot be given: the Ingress is then not served)."""
    kind = annotations.get(NGINX + "auth-type")
    if kind is None:
        for name in ("auth-secret", "auth-secret-type", "auth-realm"):
            if NGINX + name in annotations:
                report(NGINX + name, "has no effect without auth-type", "warning")
        return None
    if kind.strip() != "basic":
        report(NGINX + "auth-type", f"auth-type {kind.strip()!r} is not supported (basic is)"
               + NOT_OPEN)  # fmt: skip
        return None
    secret = (annotations.get(NGINX + "auth-secret") or "").strip()
    if not secret:
        report(NGINX + "auth-type", "needs auth-secret, the Secret holding the users" + NOT_OPEN)
        return None
    secret_namespace, _, name = secret.rpartition("/")
    if secret_namespace and secret_namespace != namespace:
        report(NGINX + "auth-secret", "a Secret of another namespace is not read" + NOT_OPEN)
        return None
    layout = (annotations.get(NGINX + "auth-secret-type") or "auth-file").strip()
    if layout not in ("auth-file", "auth-map"):
        report(NGINX + "auth-secret-type", f"expected auth-file or auth-map, got {layout!r}"
               + NOT_OPEN)  # fmt: skip
        return None
    realm = (annotations.get(NGINX + "auth-realm") or "").strip()
    return BasicAuthSecret(name, layout == "auth-map", realm)


# htpasswd hash prefixes Portway will not check, and what they are
_WEAK_HASHES = (("$apr1$", "Apache MD5"), ("{SHA}", "SHA-1"), ("$1$", "MD5 crypt"),
                ("$5$", "SHA-256 crypt"), ("$6$", "SHA-512 crypt"))  # fmt: skip


def basic_auth_users(
    data: dict[str, bytes], secret: BasicAuthSecret
) -> tuple[list[dict[str, str]], list[str]]:
    """The ``basic_auth`` users of the Secret's ``data``, and the problems found (none: usable)."""
    pairs: list[tuple[str, str, str]] = []  # (where, user, hash)
    if secret.per_key:
        for key, value in data.items():
            pairs.append((f"key {key!r}", key, value.decode("utf-8", "replace").strip()))
    elif "auth" not in data:
        return [], ["has no key 'auth' (the htpasswd file, auth-secret-type auth-file)"]
    else:
        text = data["auth"].decode("utf-8", "replace")
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            user, colon, password_hash = line.strip().partition(":")
            if not colon:
                return [], [f"line {number} of 'auth' is not user:hash"]
            pairs.append((f"line {number} of 'auth'", user, password_hash))
    problems: list[str] = []
    for where, user, password_hash in pairs:
        weak = next(
            (what for prefix, what in _WEAK_HASHES if password_hash.startswith(prefix)), None
        )
        if weak is not None or not password_hash.startswith("$2"):
            what = weak or "crypt or plain text"
            problems.append(f"{where}: user {user!r}: {what} hashes are not accepted, only "
                            "bcrypt (htpasswd -B)")  # fmt: skip
    if not pairs and not problems:
        problems.append("holds no users")
    users = [{"name": user, "password_hash": password_hash} for _, user, password_hash in pairs]
    return users, problems
