"""The response head a client gets for an upstream response (RFC 9110 §7.6.1, RFC 9112 §6).

Hop-by-hop fields go, including those the upstream's Connection names; the request id and any
headers a stage asked for are added; framing is decided again for this hop: a Content-Length is
kept, a chunked or read-until-close body is re-chunked for HTTP/1.1 clients, and an HTTP/1.0
client gets the raw bytes with the connection's end marking the body's.

Once per response, so it is written for speed: field names are classified through a cache keyed
by the name as received (upstreams repeat their spelling), the head is appended to the exchange's
output a line at a time (joined once with the body bytes), and the framing is one of sixteen
shared, read-only ``Framing`` values. A line is ``b"%s: %s\r\n" % (name, value)``: compiled, that
is one allocation and four copies, where four pieces cost the final join ~130 instructions each
(it takes a buffer of every piece).
"""

from __future__ import annotations

from typing import Final

from portway.upstream.forward import (
    HOP_BY_HOP,
    REQUEST_ID_HEADER,
    connection_tokens,
    names_fields,
)

_DROP: Final = HOP_BY_HOP | {REQUEST_ID_HEADER}

# What a response field name is to this module.
_PLAIN: Final = 0
_DROPPED: Final = 1
_LENGTH: Final = 2
_TRANSFER_ENCODING: Final = 3
_CONNECTION: Final = 4
# Lengths of the names that are not _PLAIN: a name of any other length is plain without hashing
# it (a fresh bytes object per response, so its hash is computed every time: Server, Date, most).
_MAY_MATTER: Final = bytes(
    1 if any(len(name) == size for name in (*_DROP, b"content-length", b"connection")) else 0
    for size in range(32)
)
_NAME_KINDS_LIMIT: Final = 1024
_name_kinds: Final[dict[bytes, int]] = {}  # name as received -> kind; bounded, filled as names come

_STATUS_LINES_LIMIT: Final = 256
_status_lines: Final[dict[int, tuple[bytes, bytes]]] = {}  # status -> (reason, status line)


class Framing:
    """How the body goes to the client. Shared and read-only: see ``framing``."""

    __slots__ = ("chunked", "close", "no_body", "until_close")

    def __init__(
        self,
        chunked: bool = False,
        until_close: bool = False,
        no_body: bool = False,
        close: bool = False,
    ) -> None:
        self.chunked = chunked  # the body goes to the client chunked
        self.until_close = until_close  # the upstream ends its body by closing
        self.no_body = no_body  # HEAD, 204, 304
        self.close = close  # the client connection ends after this response

    def __repr__(self) -> str:
        return (
            f"Framing(chunked={self.chunked}, until_close={self.until_close}, "
            f"no_body={self.no_body}, close={self.close})"
        )


_FRAMINGS: Final = tuple(
    Framing(bool(i & 8), bool(i & 4), bool(i & 2), bool(i & 1)) for i in range(16)
)
NO_FRAMING: Final = _FRAMINGS[0]


def framing(chunked: bool, until_close: bool, no_body: bool, close: bool) -> Framing:
    """The shared ``Framing`` with these flags."""
    return _FRAMINGS[chunked * 8 + until_close * 4 + no_body * 2 + close]


def _kind(name: bytes) -> int:
    lname = name.lower()
    if lname == b"content-length":
        kind = _LENGTH
    elif lname == b"transfer-encoding":
        kind = _TRANSFER_ENCODING
    elif lname == b"connection":
        kind = _CONNECTION
    elif lname in _DROP:
        kind = _DROPPED
    else:
        kind = _PLAIN
    if len(_name_kinds) < _NAME_KINDS_LIMIT:
        _name_kinds[name] = kind
    return kind


def _status_line(status: int, reason: bytes) -> bytes:
    cached = _status_lines.get(status)
    if cached is not None and cached[0] == reason:
        return cached[1]
    line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
    if len(_status_lines) < _STATUS_LINES_LIMIT:
        _status_lines[status] = (reason, line)
    return line


def build_into(
    out: list[bytes],
    status: int,
    reason: bytes,
    headers: list[tuple[bytes, bytes]],
    request_id: bytes,
    added: list[tuple[bytes, bytes]],
    explain: bytes | None,
    *,
    head_request: bool,
    http10: bool,
    close: bool,
    overrides: frozenset[bytes] = frozenset(),
) -> Framing:
    """Append the serialized head to ``out`` (pieces, to be joined) and say how the body must be
    framed. ``added`` are fields a stage asked for (a sticky cookie, HSTS), ``explain`` the value
    of ``x-portway-explain`` when one was asked for. ``overrides``: lower-case names of upstream
    fields dropped because a stage's own copy in ``added`` wins (empty, and free, unless a route
    has a CORS policy)."""
    if overrides:
        headers = [field for field in headers if field[0].lower() not in overrides]
    start = len(out)
    out.append(_status_line(status, reason))
    received = _PLAIN  # _LENGTH or _TRANSFER_ENCODING: the framing the upstream used
    connection: bytes | None = None
    kinds = _name_kinds
    for name, value in headers:
        size = len(name)
        if size < 32 and _MAY_MATTER[size]:
            kind = kinds.get(name)
            if kind is None:
                kind = _kind(name)
        else:
            kind = _PLAIN
        if kind == _PLAIN:
            out.append(b"%s: %s\r\n" % (name, value))
        elif kind == _LENGTH:
            received = _LENGTH
            out.append(b"%s: %s\r\n" % (name, value))
        elif kind == _TRANSFER_ENCODING:
            received = _TRANSFER_ENCODING
        elif kind == _CONNECTION:
            connection = value if connection is None else connection + b"," + value
    if connection is not None and names_fields(connection):
        named = connection_tokens([connection]) - HOP_BY_HOP
        if named:  # fields the upstream declared hop-by-hop: write the fields again without them
            del out[start + 1 :]
            for name, value in headers:
                kind = kinds.get(name)
                if kind is None:
                    kind = _kind(name)
                if kind in (_PLAIN, _LENGTH) and name.lower() not in named:
                    out.append(b"%s: %s\r\n" % (name, value))
    out.append(b"x-request-id: %s\r\n" % request_id)
    for name, value in added:
        out.append(b"%s: %s\r\n" % (name, value))
    if explain is not None:
        out.append(b"x-portway-explain: %s\r\n" % explain)
    no_body = head_request or status == 204 or status == 304
    chunked = until_close = False
    if not no_body and received != _LENGTH:
        until_close = received == _PLAIN
        if http10:
            close = True
        else:
            chunked = True
            out.append(b"transfer-encoding: chunked\r\n")
    elif received == _TRANSFER_ENCODING and no_body and not http10:
        out.append(b"transfer-encoding: chunked\r\n")  # what the GET would have said
    if close:
        out.append(b"connection: close\r\n\r\n")
    elif http10:
        out.append(b"connection: keep-alive\r\n\r\n")
    else:
        out.append(b"\r\n")
    return _FRAMINGS[chunked * 8 + until_close * 4 + no_body * 2 + close]
