"""Sticky sessions: a cookie Portway sets names the endpoint that serves the client's next requests.

The cookie value is the endpoint's opaque ``key``, so backend addresses never reach clients. A
request whose cookie names a candidate endpoint goes there; any other request is balanced by the
inner algorithm and gets a ``Set-Cookie`` naming the endpoint picked (RFC 6265 §4.1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from typing import TYPE_CHECKING, Final

from portway.balancing.base import Balancer
from portway.balancing.endpoint import Endpoint

if TYPE_CHECKING:
    from portway.config.model import StickyConfig
    from portway.messages import Request

# RFC 6265 §4.1.1: cookie-name is an RFC 2616 token; path-value is any CHAR except CTLs and ";".
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_COOKIE_PATH = re.compile(r"[\x20-\x3a\x3c-\x7e]+")

SET_COOKIE: Final = b"set-cookie"


def cookie_attributes(config: StickyConfig) -> str:
    """The attributes after ``name=value`` in the Set-Cookie header, in a fixed order."""
    if not _COOKIE_NAME.fullmatch(config.cookie):
        raise ValueError(f"not a valid cookie name (RFC 6265 §4.1.1): {config.cookie!r}")
    if not _COOKIE_PATH.fullmatch(config.path) or not config.path.startswith("/"):
        raise ValueError(f"not a valid cookie path (RFC 6265 §4.1.1): {config.path!r}")
    attributes = f"; Path={config.path}"
    if config.http_only:
        attributes += "; HttpOnly"
    if config.max_age is not None:
        # Max-Age is whole seconds and 0 would expire the cookie at once (RFC 6265 §5.2.2).
        attributes += f"; Max-Age={max(1, math.ceil(config.max_age))}"
    if config.secure:
        attributes += "; Secure"
    return attributes + "; SameSite=Lax"


class StickyBalancer(Balancer):
    __slots__ = ("_by_key", "_cookie", "_cookie_prefix", "_inner", "_set_cookie_values")

    def __init__(self, inner: Balancer, config: StickyConfig) -> None:
        super().__init__(inner.endpoints)
        attributes = cookie_attributes(config)  # validates the name and path first
        self._inner = inner
        self._cookie = config.cookie
        self._cookie_prefix = f"{config.cookie}=".encode("ascii")
        # Built once: a pick that sets the cookie appends a ready-made value.
        self._set_cookie_values = tuple(
            f"{config.cookie}={e.key}{attributes}".encode("ascii") for e in self.endpoints
        )
        by_key: dict[str, Endpoint] = {}
        for endpoint in self.endpoints:
            by_key.setdefault(endpoint.key, endpoint)
        self._by_key = by_key

    @property
    def inner(self) -> Balancer:
        return self._inner

    def pick_at(
        self, request: Request, exclude: Collection[Endpoint], now: float
    ) -> Endpoint | None:
        value = request.cookie(self._cookie)
        if value is not None:
            endpoint = self._by_key.get(value)
            if (
                endpoint is not None
                and endpoint.healthy
                and endpoint.down_until <= now
                and (not exclude or endpoint not in exclude)
            ):
                return endpoint
        endpoint = self._inner.pick_at(request, exclude, now)
        if endpoint is not None:
            self._set_cookie(request, self._set_cookie_values[endpoint.index])
        return endpoint

    def _set_cookie(self, request: Request, value: bytes) -> None:
        # A retry picks again for the same request: replace the cookie an earlier pick set.
        headers = request.response_headers
        prefix = self._cookie_prefix
        for position, (name, old_value) in enumerate(headers):
            if name == SET_COOKIE and old_value.startswith(prefix):
                headers[position] = (SET_COOKIE, value)
                return
        headers.append((SET_COOKIE, value))
