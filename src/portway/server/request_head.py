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
    cause = b"method_not_allowed"
    # RFC 9110 §15.5.6: a 405 names the methods the target supports.
    headers = ((b"allow", b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE"),)


class UpgradeNotSupported(HttpError):
    status = 501
    reason = "upgrade not supported"
    cause = b"upgrade_not_supported"


def upgrade_error(method: bytes) -> HttpError:
    """What a CONNECT or an ``Upgrade`` request other than a WebSocket handshake gets."""
    if method == b"CONNECT":
        return MethodNotAllowed("CONNECT is not supported: Portway is a reverse proxy")
    return UpgradeNotSupported("only WebSocket upgrades are supported")


def websocket_upgrade(
    method: bytes, version: str, headers: list[tuple[bytes, bytes]], has_body: bool
) -> bytes:
    """The ``Upgrade`` value of a WebSocket handshake (RFC 6455 §4.1, RFC 9110 §7.8), to forward
    as received; raises for any other upgrade.

    Only ``websocket`` is tunnelled. h2c (RFC 7540 §3.2, removed by RFC 9113) would hand the
    connection to an HTTP/2 upstream whose requests the gateway could no longer route, police or
    log; an arbitrary protocol would be a byte pipe to an upstream whose requests never pass
    the gateway ("upgrade smuggling"). Both keep the 501. The handshake is a GET on HTTP/1.1
    without a body: llhttp hands every byte after the head to the new protocol, so a body could
    not be told from frames.
    """
    if method != b"GET":
        raise upgrade_error(method)
    if version != "1.1":
        raise BadRequest("a protocol upgrade needs HTTP/1.1 (RFC 9110 §7.8)")
    value = b""
    for name, field in headers:
        if name.lower() == b"upgrade":
            value = field if not value else value + b", " + field
    tokens = [t.strip().lower() for t in value.split(b",")]
    if tokens != [b"websocket"]:
        raise upgrade_error(method)
    if has_body:
        raise BadRequest("a WebSocket handshake carries no body (RFC 6455 §4.1)")
    return value.strip()


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


def check_host(host: bytes | None, count: int, version: str, authority: bytes | None) -> bytes:
    """The authority to route on: absolute-form's, else the single valid Host (RFC 9112 §3.2)."""
    if count > 1:
        raise BadRequest("more than one Host header field")
    if host is not None and host not in _valid_hosts:
        if not _HOST.match(host):
            raise BadRequest("invalid Host header field")
        _remember(host)
    if authority is not None:
        return authority
    if host is not None:
        return host
    if version == "1.1":
        raise BadRequest("missing Host header field (required in HTTP/1.1)")
    return b""


# Hosts repeat from request to request: validated ones and their routing form are kept, up to a
# bound, so the regex and decoding run once per distinct host rather than once per request.
_CACHE_LIMIT = 4096
_valid_hosts: dict[bytes, str] = {}


def _remember(host: bytes) -> None:
    if len(_valid_hosts) < _CACHE_LIMIT:
        _valid_hosts[host] = _routing_form(host)


def host_for_routing(authority: bytes) -> str:
    """Lower-case host without port and without a trailing dot; IPv6 keeps its brackets."""
    host = _valid_hosts.get(authority)
    return host if host is not None else _routing_form(authority)


def _routing_form(authority: bytes) -> str:
    if authority[:1] == b"[":
        end = authority.find(b"]")
        return authority[: end + 1].decode("ascii").lower()
    host = authority.partition(b":")[0]
    return host.rstrip(b".").decode("ascii").lower()


def check_transfer_encoding(value: bytes) -> None:
    """Only plain ``chunked`` is forwardable: another coding changes the bytes we pass on unseen.

    RFC 9112 §6.3 rule 4: chunked not last means the length cannot be known: 400. llhttp accepts
    ``gzip, chunked``; RFC 9112 §6.1 has a server answer 501 to a coding it does not implement.
    """
    codings = [c.strip() for c in value.lower().split(b",")]
    if codings[-1] != b"chunked":
        raise BadRequest("Transfer-Encoding must end with chunked (RFC 9112 §6.3)")
    if len(codings) > 1:
        raise NotImplemented_(f"transfer coding {value.decode('latin-1')!r} is not supported")
