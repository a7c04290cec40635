"""CORS at the gateway: the Fetch standard's CORS protocol, answered and enforced per route
(https://fetch.spec.whatwg.org/#http-cors-protocol).

Browsers ask before a cross-origin request that is not "simple" with a CORS-preflight request
(Fetch §3.2.2: ``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``, never with
credentials, §4.8). The gateway answers those itself, 204 or 403, so they never reach the service
and no authentication policy refuses them for lacking credentials they cannot carry. Other requests
with an ``Origin`` go on; an allowed origin's response gets the CORS response headers (§3.2.3).
A request from an origin not allowed is never refused: CORS protects what a *browser* lets a page
read, a server cannot tell a browser from curl, and the browser blocks the read anyway when the
headers are missing.

The gateway is the one CORS authority of a route with this policy: the upstream's own
``Access-Control-*`` response fields are dropped (``Request.response_overrides``), so a backend
answering ``Access-Control-Allow-Origin: *`` cannot widen the allow-list, and nothing is sent twice.

Caching (Fetch §3.2.5 "CORS protocol and HTTP caches"): when the answer depends on the origin,
every response says ``Vary: Origin``, requests without one included, so a shared cache never serves
one origin's answer to another; with ``*`` every response carries ``Access-Control-Allow-Origin: *``
for the same reason.
"""

from __future__ import annotations

import re
from typing import Final

from portway.config.cors import NORMALIZED_METHODS, CorsConfig
from portway.messages import LocalAnswer, Request
from portway.policies.base import CORS_REFUSED, Policy

ALLOW_ORIGIN: Final = b"access-control-allow-origin"
ALLOW_CREDENTIALS: Final = b"access-control-allow-credentials"
ALLOW_METHODS: Final = b"access-control-allow-methods"
ALLOW_HEADERS: Final = b"access-control-allow-headers"
EXPOSE_HEADERS: Final = b"access-control-expose-headers"
MAX_AGE: Final = b"access-control-max-age"
VARY: Final = b"vary"
# Every CORS response field (Fetch §3.2.3): on a route with this policy, only the gateway's count.
CORS_RESPONSE_FIELDS: Final = frozenset(
    {ALLOW_ORIGIN, ALLOW_CREDENTIALS, ALLOW_METHODS, ALLOW_HEADERS, EXPOSE_HEADERS, MAX_AGE}
)
_PREFLIGHT_VARY: Final = (
    VARY,
    b"origin, access-control-request-method, access-control-request-headers",
)
_VARY_ORIGIN: Final = (VARY, b"origin")
_LABEL: Final = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_METHOD: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # a token, RFC 9110 §5.6.2
_TOKEN: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9a-z-]+\Z")  # the same, lower-cased


class CorsPolicy(Policy):
    kind = "cors"

    def __init__(self, name: str, config: CorsConfig) -> None:
        super().__init__(name)
        origins = config.allow_origins
        self.any_origin = "*" in origins  # then never with credentials (config.cors)
        self.exact = frozenset(o for o in origins if "://*." not in o and o != "*")
        # "https://*.example.com:8443" -> ("https://", ".example.com:8443"): one label between.
        self.patterns = tuple(
            (o[: o.index("*")], o[o.index("*") + 1 :]) for o in origins if "://*." in o
        )
        self.credentials = config.allow_credentials
        self.any_method = "*" in config.allow_methods
        self.methods = frozenset(m for m in config.allow_methods if m != "*")
        listed = [m for m in config.allow_methods if m != "*"]
        self.methods_value = ", ".join(dict.fromkeys(listed)).encode()
        self.any_header = "*" in config.allow_headers
        self.headers = frozenset(h for h in config.allow_headers if h != "*")
        self.headers_value = ", ".join(h for h in config.allow_headers if h != "*").encode()
        self.max_age = b"%d" % int(config.max_age)
        actual: list[tuple[bytes, bytes]] = []
        if self.credentials:
            actual.append((ALLOW_CREDENTIALS, b"true"))
        if config.expose_headers:
            actual.append((EXPOSE_HEADERS, ", ".join(config.expose_headers).encode()))
        self.actual = actual  # after Access-Control-Allow-Origin on an allowed actual request
        # With "*" the answer is the same for every origin (and for none): no Vary needed.
        self.static = [(ALLOW_ORIGIN, b"*"), *actual] if self.any_origin else None

    def allows(self, origin: str) -> bool:
        """Whether ``origin`` (an ``Origin`` header's value) is allowed. ``null`` (an opaque
        origin, HTML §7.1.1) only matches ``*``: config refuses to list it."""
        if self.any_origin:
            return True
        origin = origin.lower()
        if origin in self.exact:
            return True
        for prefix, suffix in self.patterns:
            if (
                origin.startswith(prefix)
                and origin.endswith(suffix)
                and _LABEL.match(origin[len(prefix) : len(origin) - len(suffix)])
            ):
                return True
        return False

    def apply(self, request: Request) -> LocalAnswer | None:
        request.response_overrides = CORS_RESPONSE_FIELDS
        origin = request.header("origin")
        static = self.static
        if origin is None:
            # Not a CORS request (Fetch §3.2.1), but a cache may serve its response to one.
            request.response_headers.extend(static if static is not None else (_VARY_ORIGIN,))
            return None
        if request.method == "OPTIONS":
            requested = request.header("access-control-request-method")
            if requested is not None:
                return self.preflight(request, origin, requested)
        if static is not None:
            request.response_headers.extend(static)
        elif self.allows(origin):
            request.response_headers += [
                (ALLOW_ORIGIN, origin.encode("latin-1")),
                *self.actual,
                _VARY_ORIGIN,
            ]
        else:
            request.response_headers.append(_VARY_ORIGIN)
        return None

    def preflight(self, request: Request, origin: str, requested: str) -> LocalAnswer:
        """A CORS-preflight request (Fetch §4.8): 204 with what the browser checks (§3.2.3), or
        403 naming what is not allowed. Never forwarded."""
        if not self.allows(origin):
            return _refuse(f"origin {origin!r} is not allowed")
        method = requested.strip()
        if not _METHOD.match(method):
            return _refuse(f"requested method {method!r} is not a method")
        if method.upper() in NORMALIZED_METHODS:
            method = method.upper()  # Fetch §2.2.1: normalize a method
        if not (self.any_method or method in self.methods):
            return _refuse(f"method {method!r} is not allowed")
        asked = [
            name.strip().lower()
            for name in (request.header("access-control-request-headers") or "").split(",")
        ]
        asked = [name for name in asked if name]
        for name in asked:
            if not _TOKEN.match(name):
                return _refuse(f"requested header {name!r} is not a header name")
            # A "*" never covers Authorization (Fetch §4.8, CORS-preflight fetch step 7.6).
            if name not in self.headers and (not self.any_header or name == "authorization"):
                return _refuse(f"header {name!r} is not allowed")
        headers = [
            (ALLOW_ORIGIN, b"*" if self.any_origin else origin.encode("latin-1")),
            (ALLOW_METHODS, method.encode("latin-1") if self.any_method else self.methods_value),
        ]
        if self.credentials:
            headers.append((ALLOW_CREDENTIALS, b"true"))
        # With "*" the names asked for are echoed: a literal "*" means nothing with credentials.
        allowed_headers = ", ".join(asked).encode() if self.any_header else self.headers_value
        if allowed_headers:
            headers.append((ALLOW_HEADERS, allowed_headers))
        headers += [(MAX_AGE, self.max_age), _PREFLIGHT_VARY]
        return LocalAnswer(204, "", None, headers, b"")


def _refuse(why: str) -> LocalAnswer:
    return LocalAnswer(
        403, f"CORS preflight refused: {why}", CORS_REFUSED.encode(), [_PREFLIGHT_VARY]
    )
