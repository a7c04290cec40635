"""The response head a client gets for an upstream response (RFC 9110 §7.6.1, RFC 9112 §6).

Hop-by-hop fields go, including those the upstream's Connection names; the request id and any
headers a stage asked for are added; framing is decided again for this hop: a Content-Length is
kept, a chunked or read-until-close body is re-chunked for HTTP/1.1 clients, and an HTTP/1.0
client gets the raw bytes with the connection's end marking the body's.
"""

from __future__ import annotations

from dataclasses import dataclass

from portway.upstream.forward import (
    HOP_BY_HOP,
    PLAIN_CONNECTION,
    REQUEST_ID_HEADER,
    connection_tokens,
)

_DROP = HOP_BY_HOP | {REQUEST_ID_HEADER}


@dataclass(slots=True)
class Framing:
    chunked: bool = False  # the body goes to the client chunked
    until_close: bool = False  # the upstream ends its body by closing
    no_body: bool = False  # HEAD, 204, 304
    close: bool = False  # the client connection ends after this response


def build(
    status: int,
    reason: bytes,
    headers: list[tuple[bytes, bytes]],
    extra: list[bytes],
    *,
    head_request: bool,
    http10: bool,
    close: bool,
) -> tuple[bytes, Framing]:
    """The serialized head and how the body must be framed. ``extra`` are ready header lines."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    append = lines.append
    framing: bytes | None = None  # b"content-length" or b"transfer-encoding" as received
    connection: bytes | None = None
    for name, value in headers:
        lname = name.lower()
        if lname in _DROP:
            if lname == b"transfer-encoding":
                framing = lname
            elif lname == b"connection":
                connection = value if connection is None else connection + b"," + value
            continue
        if lname == b"content-length":
            framing = lname
        append(b"%s: %s\r\n" % (name, value))
    if connection is not None and connection.lower() not in PLAIN_CONNECTION:
        named = connection_tokens([connection]) - HOP_BY_HOP
        if named:  # fields the upstream declared hop-by-hop
            lines = [lines[0]] + [
                line for line in lines[1:] if line.split(b":", 1)[0].lower() not in named
            ]
    lines.extend(extra)
    result = Framing(no_body=head_request or status in (204, 304), close=close)
    if not result.no_body and framing != b"content-length":
        result.until_close = framing is None
        if http10:
            result.close = True
        else:
            result.chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
    elif framing == b"transfer-encoding" and result.no_body and not http10:
        lines.append(b"transfer-encoding: chunked\r\n")  # what the GET would have said
    if result.close:
        lines.append(b"connection: close\r\n")
    elif http10:
        lines.append(b"connection: keep-alive\r\n")
    lines.append(b"\r\n")
    return b"".join(lines), result
