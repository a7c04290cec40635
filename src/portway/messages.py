"""What the routing and balancing stages see of a request.

One ``Request`` is built per request by the protocol layer after the head is parsed and validated.
Lookups a matcher may need (a header by name, a cookie, a query parameter) are computed lazily, so a
route that matches on host and path alone costs no header dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qs

NO_OVERRIDES: Final[frozenset[bytes]] = frozenset()


@dataclass(slots=True)
class LocalAnswer:
    """A response the gateway gives itself instead of sending the request on (a redirect, an
    ACME challenge, a refused client certificate, a policy's 401 or 429)."""

    status: int
    detail: str
    cause: bytes | None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes | None = None  # None: the standard text body naming status and detail


class Request:
    """A parsed, validated request head as routing, balancing and policies see it.

    ``host`` is lower-case without port; ``path`` is the normalized path (what the backend receives);
    ``query`` is the raw query string without ``?``; ``headers`` are the raw header lines in order.
    ``response_headers`` collects headers a stage wants added to the response (e.g. a sticky cookie).
    ``consumer`` is who an authentication policy found the client to be ("" until then).
    ``response_overrides`` names (lower-case) the upstream response fields to drop because a stage
    owns them (a CORS policy's ``access-control-*``): its own copies then win over the upstream's.
    """

    __slots__ = (
        "_cookies",
        "_header_map",
        "_query_params",
        "client_ip",
        "consumer",
        "headers",
        "host",
        "method",
        "path",
        "query",
        "request_id",
        "response_headers",
        "response_overrides",
    )

    def __init__(
        self,
        method: str,
        host: str,
        path: str,
        query: str = "",
        headers: list[tuple[bytes, bytes]] | None = None,
        client_ip: str = "",
        request_id: str = "",
    ) -> None:
        self.method = method
        self.host = host
        self.path = path
        self.query = query
        self.headers = headers if headers is not None else []
        self.client_ip = client_ip
        self.request_id = request_id
        self.consumer = ""
        self.response_headers: list[tuple[bytes, bytes]] = []
        self.response_overrides = NO_OVERRIDES
        self._header_map: dict[str, str] | None = None
        self._cookies: dict[str, str] | None = None
        self._query_params: dict[str, list[str]] | None = None

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (lower-case), repeated fields joined with ``, ``."""
        header_map = self._header_map
        if header_map is None:
            header_map = {}
            for raw_name, raw_value in self.headers:
                key = raw_name.decode("latin-1").lower()
                value = raw_value.decode("latin-1")
                if key in header_map:
                    # RFC 9110 §5.3: repeated fields combine with commas; Cookie uses "; ".
                    header_map[key] += ("; " if key == "cookie" else ", ") + value
                else:
                    header_map[key] = value
            self._header_map = header_map
        return header_map.get(name)

    def cookie(self, name: str) -> str | None:
        cookies = self._cookies
        if cookies is None:
            cookies = {}
            for part in (self.header("cookie") or "").split(";"):
                key, sep, value = part.strip().partition("=")
                if sep and key and key not in cookies:
                    cookies[key] = value.strip('"')
            self._cookies = cookies
        return cookies.get(name)

    def query_params(self) -> dict[str, list[str]]:
        params = self._query_params
        if params is None:
            params = parse_qs(self.query, keep_blank_values=True) if self.query else {}
            self._query_params = params
        return params

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.host}{self.path}{'?' + self.query if self.query else ''}>"
