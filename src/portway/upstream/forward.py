"""Headers a request carries to the upstream, and a response carries back (RFC 9110 §7.6, RFC 7239).

Hop-by-hop fields (RFC 9110 §7.6.1: Connection, the fields it names, and the classic list) describe
one connection and are never forwarded. Forwarding fields (X-Forwarded-*, Forwarded) are believed
only from trusted proxies; from anyone else they are replaced, so a client cannot forge its address.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from portway.config.types import IPNetwork, ip_in
from portway.observability.trace_context import random_hex

HOP_BY_HOP: Final = frozenset(
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
_FORWARDING: Final = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"forwarded",
    }
)
EXPLAIN_HEADER: Final = b"x-portway-explain"
# The verified client certificate of an mTLS connection, as the gateway tells the upstream. Never
# believed from a client: dropped from every request, then set from the TLS session.
CLIENT_CERT_HEADERS: Final = (
    b"x-client-cert",
    b"x-client-cert-subject",
    b"x-client-cert-san",
    b"x-client-cert-fingerprint",
)
REQUEST_ID_HEADER: Final = b"x-request-id"
# Who an authentication policy found the client to be; written by the gateway only, so a client's
# own copy is always dropped.
CONSUMER_HEADER: Final = b"x-portway-consumer"
# Connection values that name no other field: the common case needs no token parsing.
PLAIN_CONNECTION: Final = frozenset({b"keep-alive", b"close"})


def names_fields(connection: bytes) -> bool:
    """Whether a Connection value may name fields to drop: not a plain value. The usual
    lower-case spellings are compared as they are first (lowering is a method call and a copy)."""
    return (
        connection != b"keep-alive"
        and connection != b"close"
        and connection.lower() not in PLAIN_CONNECTION
    )


_REQUEST_ID_OK: Final = re.compile(rb"^[A-Za-z0-9._:+/=-]{1,200}$")


def new_request_id() -> bytes:
    return random_hex.take(32)


# A match when a client's X-Request-Id may be kept: a plain token (nothing to escape in a log line).
valid_request_id: Final = _REQUEST_ID_OK.fullmatch


def accept_request_id(value: bytes | None) -> bytes:
    """Keep a client's X-Request-Id when it is a plain token; otherwise mint one (no log injection)."""
    if value is not None and valid_request_id(value):
        return value
    return new_request_id()


def original_client(xff: bytes, peer: str, trusted: tuple[IPNetwork, ...]) -> str:
    """The client behind trusted proxies: the rightmost X-Forwarded-For address that is not a
    trusted proxy itself (nginx's ``real_ip_recursive``). Addresses left of it were written by
    the client or hops nobody vouches for, so they are never believed. A malformed entry ends
    the walk at the last address a trusted hop gave."""
    client = peer
    for part in reversed(xff.split(b",")):
        candidate = part.strip().decode("latin-1")
        if candidate.startswith("[") and "]" in candidate:  # "[v6]" or "[v6]:port"
            candidate = candidate[1 : candidate.index("]")]
        elif candidate.count(":") == 1:  # "v4:port"
            candidate = candidate.partition(":")[0]
        try:
            ipaddress.ip_address(candidate)
        except ValueError:
            return client
        client = candidate
        if not ip_in(candidate, trusted):
            return client
    return client


def connection_tokens(values: list[bytes]) -> frozenset[bytes]:
    """Field names listed in Connection (RFC 9110 §7.6.1), lower-case."""
    return frozenset(t.strip().lower() for v in values for t in v.split(b",") if t.strip())


class ClientInfo:
    """Per-connection facts the forwarding headers need, computed once per connection."""

    __slots__ = ("_block", "_block_host", "forwarded_for", "ip", "port", "proto", "trusted")

    def __init__(self, ip: str, port: int, proto: bytes, trusted: bool) -> None:
        self.ip = ip.encode("ascii")
        self.port = b"%d" % port  # the listener's port, for X-Forwarded-Port
        self.proto = proto
        self.trusted = trusted
        # RFC 7239 §6: IPv6 addresses are bracketed and quoted.
        self.forwarded_for = b'for="[%s]"' % self.ip if b":" in self.ip else b"for=" + self.ip
        self._block_host: bytes | None = None
        self._block = b""

    def forwarding(self, host: bytes) -> bytes:
        """The forwarding fields the gateway writes for this (untrusted) client asking for
        ``host``; the last one is kept, as a connection's requests usually name one host."""
        if host == self._block_host:
            return self._block
        block = (
            b"x-forwarded-for: %s\r\nx-forwarded-proto: %s\r\nx-forwarded-host: %s\r\n"
            b'x-forwarded-port: %s\r\nforwarded: %s;host="%s";proto=%s\r\n'
            % (self.ip, self.proto, host, self.port, self.forwarded_for, host, self.proto)
        )
        self._block_host = host
        self._block = block
        return block


# What a request header name means to the gateway, looked up once per header line.
# Final: compiled, each comparison with one is a comparison with a constant, not a global lookup.
HOST: Final = 1
CONTENT_LENGTH: Final = 2
TRANSFER_ENCODING: Final = 3
CONNECTION: Final = 4
REQUEST_ID: Final = 5
EXPLAIN: Final = 6
TE: Final = 7
HOP: Final = 8
XFF: Final = 9
XF_PROTO: Final = 10
XF_HOST: Final = 11
XF_PORT: Final = 12
FORWARDED: Final = 13
TRACEPARENT: Final = 14
TRACESTATE: Final = 15
USER_AGENT: Final = 16  # forwarded as received, and kept for the access log
REFERER: Final = 17
UPGRADE: Final = 18  # hop-by-hop; noted, as llhttp upgrades no request without one (or CONNECT)
_REQUEST_FIELD_KIND: Final = {
    b"host": HOST,
    b"content-length": CONTENT_LENGTH,
    b"transfer-encoding": TRANSFER_ENCODING,
    b"connection": CONNECTION,
    b"x-request-id": REQUEST_ID,
    EXPLAIN_HEADER: EXPLAIN,
    b"te": TE,
    b"keep-alive": HOP,
    b"proxy-connection": HOP,
    b"trailer": HOP,
    b"upgrade": UPGRADE,
    b"x-forwarded-for": XFF,
    b"x-forwarded-proto": XF_PROTO,
    b"x-forwarded-host": XF_HOST,
    b"x-forwarded-port": XF_PORT,
    b"forwarded": FORWARDED,
    # W3C trace context: the gateway writes its own (continued or new) to the upstream.
    b"traceparent": TRACEPARENT,
    b"tracestate": TRACESTATE,
    b"user-agent": USER_AGENT,
    b"referer": REFERER,
    **dict.fromkeys(CLIENT_CERT_HEADERS, HOP),
    CONSUMER_HEADER: HOP,
}
PLAIN: Final = 0  # a field forwarded as it is
# Field name as received -> kind (PLAIN or one of the above): clients repeat their spelling, so
# most lookups skip lowering the name. Bounded, filled as names come.
_RAW_KINDS_LIMIT: Final = 2048
_raw_kinds: Final[dict[bytes, int]] = {}


def _kind_of(name: bytes) -> int:
    kind = _REQUEST_FIELD_KIND.get(name.lower(), PLAIN)
    if len(_raw_kinds) < _RAW_KINDS_LIMIT:
        _raw_kinds[name] = kind
    return kind


class RequestFields:
    """One pass over a request's header lines: the fields the gateway acts on, and the lines it
    forwards as they are (already serialized, hop-by-hop and forwarding fields left out)."""

    __slots__ = (
        "connection",
        "content_length",
        "explain",
        "forwarded",
        "host",
        "host_count",
        "lines",
        "referer",
        "request_id",
        "te_trailers",
        "traceparent",
        "tracestate",
        "transfer_encoding",
        "upgrade",
        "user_agent",
        "xf_host",
        "xf_port",
        "xf_proto",
        "xff",
    )

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        lines: list[bytes] = []
        host = content_length = transfer_encoding = connection = request_id = None
        xff = xf_proto = xf_host = xf_port = forwarded = traceparent = tracestate = None
        user_agent = referer = None
        host_count = 0
        explain = te_trailers = upgrade = False
        raw_kinds = _raw_kinds
        for name, value in headers:
            kind = raw_kinds.get(name)
            if kind is None:
                kind = _kind_of(name)
            if kind == PLAIN:
                lines.append(b"%s: %s\r\n" % (name, value))
            elif kind == USER_AGENT:
                user_agent = value
                lines.append(b"%s: %s\r\n" % (name, value))
            elif kind == REFERER:
                referer = value
                lines.append(b"%s: %s\r\n" % (name, value))
            elif kind == HOST:
                host = value
                host_count += 1
            elif kind == CONTENT_LENGTH:
                content_length = value
                lines.append(b"%s: %s\r\n" % (name, value))
            elif kind == TRANSFER_ENCODING:
                transfer_encoding = value
            elif kind == CONNECTION:
                connection = value if connection is None else connection + b"," + value
            elif kind == REQUEST_ID:
                request_id = value
            elif kind == EXPLAIN:
                explain = True
            elif kind == TE:
                te_trailers = b"trailers" in value.lower()
            elif kind == XFF:
                xff = value if xff is None else xff + b", " + value
            elif kind == FORWARDED:
                forwarded = value if forwarded is None else forwarded + b", " + value
            elif kind == XF_PROTO:
                xf_proto = value
            elif kind == XF_HOST:
                xf_host = value
            elif kind == XF_PORT:
                xf_port = value
            elif kind == TRACEPARENT:
                traceparent = value if traceparent is None else traceparent + b"," + value
            elif kind == TRACESTATE:
                tracestate = value if tracestate is None else tracestate + b"," + value
            elif kind == UPGRADE:
                upgrade = True
        self.lines = lines
        self.host = host
        self.host_count = host_count
        self.content_length = content_length
        self.transfer_encoding = transfer_encoding
        self.connection = connection
        self.request_id = request_id
        self.explain = explain
        self.te_trailers = te_trailers
        self.xff = xff
        self.xf_proto = xf_proto
        self.xf_host = xf_host
        self.xf_port = xf_port
        self.forwarded = forwarded
        self.traceparent = traceparent
        self.tracestate = tracestate
        self.user_agent = user_agent
        self.referer = referer
        self.upgrade = upgrade

    def upstream_lines(
        self,
        client: ClientInfo,
        host: bytes,
        request_id: bytes,
        chunked: bool,
        extra: bytes = b"",
    ) -> bytes:
        """Every header line for the upstream except Host, ending with the blank line; ``extra``
        (whole lines) goes just before it.

        ``host`` is the authority the client asked for (X-Forwarded-Host, Forwarded ``host=``).
        """
        lines = self.lines
        if self.connection is not None and names_fields(self.connection):
            named = connection_tokens([self.connection]) - HOP_BY_HOP
            if named:  # fields the client declared hop-by-hop (RFC 9110 §7.6.1)
                lines = [line for line in lines if line.split(b":", 1)[0].lower() not in named]
        if client.trusted:
            own_forwarded = b'%s;host="%s";proto=%s' % (client.forwarded_for, host, client.proto)
            block = (
                b"x-forwarded-for: %s\r\nx-forwarded-proto: %s\r\nx-forwarded-host: %s\r\n"
                b"x-forwarded-port: %s\r\nforwarded: %s\r\n"
                % (
                    client.ip if self.xff is None else self.xff + b", " + client.ip,
                    self.xf_proto or client.proto,
                    self.xf_host or host,
                    self.xf_port or client.port,
                    own_forwarded
                    if self.forwarded is None
                    else self.forwarded + b", " + own_forwarded,
                )
            )
        else:
            block = client.forwarding(host)
        # One join of the client's lines, then one bytes formatting: compiled, a copy per piece
        # (a join costs ~130 instructions a piece).
        return b"%s%sx-request-id: %s\r\n%s%s%s\r\n" % (
            b"".join(lines),
            block,
            request_id,
            b"transfer-encoding: chunked\r\n" if chunked else b"",
            b"te: trailers\r\n" if self.te_trailers else b"",
            extra,
        )
