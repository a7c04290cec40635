"""Headers a request carries to the upstream, and a response carries back (RFC 9110 §7.6, RFC 7239).

Hop-by-hop fields (RFC 9110 §7.6.1: Connection, the fields it names, and the classic list) describe
one connection and are never forwarded. Forwarding fields (X-Forwarded-*, Forwarded) are believed
only from trusted proxies; from anyone else they are replaced, so a client cannot forge its address.
"""

from __future__ import annotations

import random
import re

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_FORWARDING = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"forwarded",
    }
)
EXPLAIN_HEADER = b"x-portway-explain"
REQUEST_ID_HEADER = b"x-request-id"
# Stripped from requests always: it is ours, not the backend's.
_OWN_REQUEST_HEADERS = frozenset({EXPLAIN_HEADER, REQUEST_ID_HEADER, b"host"})

_REQUEST_ID_OK = re.compile(rb"^[A-Za-z0-9._:+/=-]{1,200}$")
_getrandbits = random.getrandbits


def new_request_id() -> bytes:
    return b"%032x" % _getrandbits(128)


def accept_request_id(value: bytes | None) -> bytes:
    """Keep a client's X-Request-Id when it is a plain token; otherwise mint one (no log injection)."""
    if value is not None and _REQUEST_ID_OK.match(value):
        return value
    return new_request_id()


def connection_tokens(values: list[bytes]) -> frozenset[bytes]:
    """Field names listed in Connection (RFC 9110 §7.6.1), lower-case."""
    return frozenset(t.strip().lower() for v in values for t in v.split(b",") if t.strip())


class ClientInfo:
    """Per-connection facts the forwarding headers need, computed once per connection."""

    __slots__ = ("forwarded_for", "ip", "port", "proto", "trusted")

    def __init__(self, ip: str, port: int, proto: bytes, trusted: bool) -> None:
        self.ip = ip.encode("ascii")
        self.port = b"%d" % port  # the listener's port, for X-Forwarded-Port
        self.proto = proto
        self.trusted = trusted
        # RFC 7239 §6: IPv6 addresses are bracketed and quoted.
        self.forwarded_for = b'for="[%s]"' % self.ip if b":" in self.ip else b"for=" + self.ip


def request_headers(
    headers: list[tuple[bytes, bytes]],
    client: ClientInfo,
    host: bytes,
    request_id: bytes,
    drop: frozenset[bytes],
    chunked: bool,
    te_trailers: bool,
) -> bytes:
    """All header lines for the upstream request except Host, ending with the blank line.

    ``drop`` is the hop-by-hop set including names from Connection. ``host`` is the authority the
    client asked for, for X-Forwarded-Host / Forwarded.
    """
    parts: list[bytes] = []
    append = parts.append
    trusted = client.trusted
    xff: bytes | None = None
    xf_proto = xf_host = xf_port = forwarded = None
    for name, value in headers:
        lname = name.lower()
        if lname in drop or lname in _OWN_REQUEST_HEADERS:
            continue
        if lname in _FORWARDING:
            if not trusted:
                continue
            if lname == b"x-forwarded-for":
                xff = value if xff is None else xff + b", " + value
            elif lname == b"forwarded":
                forwarded = value if forwarded is None else forwarded + b", " + value
            elif lname == b"x-forwarded-proto":
                xf_proto = value
            elif lname == b"x-forwarded-host":
                xf_host = value
            else:
                xf_port = value
            continue
        append(b"%s: %s\r\n" % (name, value))
    own_forwarded = b'%s;host="%s";proto=%s' % (client.forwarded_for, host, client.proto)
    append(
        b"x-forwarded-for: %s\r\nx-forwarded-proto: %s\r\nx-forwarded-host: %s\r\n"
        b"x-forwarded-port: %s\r\nforwarded: %s\r\nx-request-id: %s\r\n"
        % (
            client.ip if xff is None else xff + b", " + client.ip,
            client.proto if xf_proto is None else xf_proto,
            host if xf_host is None else xf_host,
            client.port if xf_port is None else xf_port,
            own_forwarded if forwarded is None else forwarded + b", " + own_forwarded,
            request_id,
        )
    )
    if chunked:
        append(b"transfer-encoding: chunked\r\n")
    if te_trailers:
        append(b"te: trailers\r\n")
    append(b"\r\n")
    return b"".join(parts)


def response_headers(headers: list[tuple[bytes, bytes]], drop: frozenset[bytes]) -> list[bytes]:
    """Upstream response header lines with hop-by-hop fields removed (framing is re-decided)."""
    return [b"%s: %s\r\n" % (n, v) for n, v in headers if n.lower() not in drop]
