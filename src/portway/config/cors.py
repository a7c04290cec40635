"""The ``cors`` policy as declared: which origins, methods and headers browsers may use across
origins (the Fetch standard's CORS protocol, https://fetch.spec.whatwg.org/#http-cors-protocol).

Kept apart from ``config.policies`` because origins need their own grammar: an origin is
``scheme://host[:port]`` (Fetch §3.2.5 and the HTML standard's serialization of an origin), never
with a path, and the one combination browsers refuse outright, ``*`` with credentials, must be a
config error rather than a route that fails in every browser.
"""

from __future__ import annotations

import re
from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from portway.config.types import Duration

_ORIGIN = re.compile(
    r"^(?P<scheme>[a-z][a-z0-9+.-]*)://"
    r"(?P<host>\[[0-9a-f:.]+\]|(?:\*\.)?[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
    r"(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*)"
    r"(?::(?P<port>[0-9]{1,5}))?\Z"
)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # RFC 9110 §5.6.2
_DEFAULT_PORTS = {"http": "80", "https": "443"}
# Fetch §2.2.1 "normalize a method": only these are compared case-insensitively.
NORMALIZED_METHODS = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"})


def _origin(value: str) -> str:
    """``*``, an origin, or an origin whose host starts with one ``*`` label, in the form a
    browser sends it (lower case, no default port), so that matching is a plain comparison."""
    if value == "*":
        return value
    if value.lower() == "null":
        # Sandboxed iframes, file: pages and redirected requests all send `Origin: null`.
        raise ValueError(
            "'null' cannot be allowed: every sandboxed iframe and file: page sends Origin: null, "
            "so allowing it allows any site"
        )
    origin = value.lower()
    scheme, sep, rest = origin.partition("://")
    if sep and "/" in rest:
        host = rest.split("/", 1)[0]
        raise ValueError(
            f"an origin is scheme://host[:port] without a path: write '{scheme}://{host}'"
        )
    match = _ORIGIN.match(origin)
    if match is None:
        raise ValueError(
            f"not an origin: {value!r} (expected scheme://host[:port], e.g. "
            "https://app.example.com, or https://*.example.com for one label of any name)"
        )
    host, port = match["host"], match["port"]
    if host.startswith("*.") and "." not in host[2:]:
        raise ValueError(f"{value!r} would allow every site under a top-level domain")
    if port is not None:
        if not 0 < int(port) < 65536:
            raise ValueError(f"port {port} of {value!r} is out of range")
        if _DEFAULT_PORTS.get(match["scheme"]) == port:
            origin = origin[: -len(port) - 1]  # browsers never send the default port
    return origin


def _method(value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"not an HTTP method: {value!r}")
    upper = value.upper()
    return upper if upper in NORMALIZED_METHODS or value == "*" else value


def _header(value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"not a valid header name: {value!r}")
    return value.lower()


CorsOrigin = Annotated[str, AfterValidator(_origin)]
CorsMethod = Annotated[str, AfterValidator(_method)]
CorsHeader = Annotated[str, AfterValidator(_header)]


class CorsConfig(BaseModel):
    """Answers browsers' CORS preflights at the gateway and adds the CORS response headers for
    the allowed origins. A route with a `cors` policy must match `OPTIONS` (or any method) for
    preflights to reach it."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    allow_origins: list[CorsOrigin] = Field(
        min_length=1,
        description="Origins allowed: `https://app.example.com`, `https://*.example.com` (one "
        "label of any name), or `*` for any origin (not with credentials).",
    )
    allow_methods: list[CorsMethod] = Field(
        ["GET", "HEAD", "POST"],
        description="Methods a preflight may ask for; `*`: any. DELETE, GET, HEAD, OPTIONS, "
        "POST and PUT match in any case, others exactly (Fetch).",
    )
    allow_headers: list[CorsHeader] = Field(
        [],
        description="Request headers a preflight may ask for; `*`: any but `Authorization`, "
        "which must be listed.",
    )
    expose_headers: list[CorsHeader] = Field(
        [], description="Response headers scripts may read besides the safelisted ones."
    )
    allow_credentials: bool = Field(
        False,
        description="Let browsers send cookies and HTTP authentication, and read the answer.",
    )
    max_age: Duration = Field(
        600.0,
        description="How long a browser may reuse a preflight answer (`Access-Control-Max-Age`, "
        "whole seconds; browsers cap it: Chromium at 2h); 0: ask every time.",
    )

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if "*" in self.allow_origins and len(self.allow_origins) > 1:
            raise ValueError("'*' already allows every origin: list no others with it")
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError(
                "allow_credentials cannot be combined with '*' origins: browsers refuse "
                "`Access-Control-Allow-Origin: *` on credentialed requests (Fetch §3.2.5); "
                "list the origins, or use https://*.example.com patterns"
            )
        if self.allow_credentials and "*" in self.expose_headers:
            raise ValueError(
                "expose_headers '*' means every header only without credentials (Fetch §3.2.3); "
                "with allow_credentials list the headers"
            )
        if self.max_age < 0:
            raise ValueError("max_age cannot be negative")
        return self
