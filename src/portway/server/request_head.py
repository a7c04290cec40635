"""Sans-IO checks of a parsed request head (RFC 9112 §3, §6.3; RFC 9110 §7.2).

httptools (llhttp) already rejects most framing attacks before we see a header: both Content-Length
and Transfer-Encoding, duplicate Content-Length, bad chunk sizes, obs-fold, CR/LF/NUL inside a
field value, whitespace before the colon. What remains is checked here on plain values, no sockets:
the HTTP version, the request-target form, the Host field, and transfer codings we cannot forward.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from portway.errors import BadRequest, HttpError, NotImplemented_, VersionNotSupported

# RFC 3986 §3.2.2 reg-name (unreserved / sub-delims / pct-encoded) or IPv4, optional ":port";
# or an IPv6 literal in brackets. Kept strict: a Host we cannot route on safely is a 400.
_HOST = re.compile(rb"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]{0,5})?$")


class MethodNotAllowed(HttpError):
    status = 405
    reason = "method not allowed"


@dataclass(slots=True)
class Target:
    """The request-target split into what routing needs."""

    path: str  # as received (still percent-encoded, not yet normalized)
    query: str  # without "?"; "" when absent
    authority: bytes | None  # from absolute-form, which overrides Host (RFC 9112 §3.2.2)


def check_version(version: str) -> None:
    if version not in ("1.1", "1.0"):
        raise VersionNotSupported(f"HTTP/{version} is not supported; use HTTP/1.1")


def parse_target(url: bytes, method: bytes) -> Target:
    """Origin-form ``/p?q``, absolute-form ``http://h/p?q``, asterisk-form ``*`` (OPTIONS only)."""
    if url[:1] == b"/":
        path, _, query = url.partition(b"?")
        return Target(path.decode("ascii"), query.decode("ascii"), None)
    if url == b"*":
        if method != b"OPTIONS":
            raise BadRequest("the '*' request-target is only valid with OPTIONS")
        return Target("*", "", None)
    lowered = url[:8].lower()
    if lowered.startswith((b"http://", b"https://")):
        rest = url[url.index(b"//") + 2 :]
        slash = rest.find(b"/")
        question = rest.find(b"?")
        cut = min(i for i in (slash, question, len(rest)) if i >= 0)
        authority, remainder = rest[:cut], rest[cut:]
        if b"@" in authority:
            raise BadRequest("userinfo is not allowed in the request-target (RFC 9110 §4.2.4)")
        if not authority or not _HOST.match(authority):
            raise BadRequest("invalid authority in absolute-form request-target")
        if remainder[:1] != b"/":
            remainder = b"/" + remainder
        path, _, query = remainder.partition(b"?")
        return Target(path.decode("ascii"), query.decode("ascii"), authority)
    if method == b"CONNECT":
        raise MethodNotAllowed("CONNECT is not supported: Portway is a reverse proxy")
    raise BadRequest("invalid request-target")


def check_host(values: list[bytes], version: str, authority: bytes | None) -> bytes:
    """The authority to route on: absolute-form's, else the single valid Host (RFC 9112 §3.2)."""
    if len(values) > 1:
        raise BadRequest("more than one Host header field")
    if values and not _HOST.match(values[0]):
        raise BadRequest("invalid Host header field")
    if authority is not None:
        return authority
    if values:
        return values[0]
    if version == "1.1":
        raise BadRequest("missing Host header field (required in HTTP/1.1)")
    return b""


def host_for_routing(authority: bytes) -> str:
    """Lower-case host without port and without a trailing dot; IPv6 keeps its brackets."""
    if authority[:1] == b"[":
        end = authority.find(b"]")
        return authority[: end + 1].decode("ascii").lower()
    host = authority.partition(b":")[0]
    return host.rstrip(b".").decode("ascii").lower()


def check_transfer_encoding(value: bytes) -> None:
    """Only ``chunked`` is forwardable: another coding changes the bytes we pass on unseen.

    llhttp accepts ``gzip, chunked``; RFC 9112 §6.1 says a server that does not understand a coding
    answers 501, which is what we do rather than forwarding a body we cannot frame honestly.
    """
    if value.strip().lower() != b"chunked":
        raise NotImplemented_(f"transfer coding {value.decode('latin-1')!r} is not supported")
