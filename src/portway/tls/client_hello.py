"""Reading the SNI and ALPN of a TLS ClientHello without terminating TLS (sans-IO).

Theory of operation. A passthrough listener must pick an upstream before any byte goes back to the
client, and the only routing key a TLS client offers in clear is the ClientHello's server_name
extension (RFC 6066 §3). ``ClientHelloParser`` is fed the client's bytes as they arrive and answers
each ``feed`` with ``None`` (need more bytes), a ``ClientHello`` (the name and ALPN list) or a
``Rejected`` (with a bounded ``kind`` and a human ``reason``). It never does I/O and never keeps
more than ``MAX_BUFFERED`` bytes; the caller forwards the bytes it received verbatim, since the
handshake transcript the server hashes must be exactly what the client sent.

The layers read (RFC 8446 §5.1 and RFC 5246 §6.2 framing, identical for this purpose):

* Records: ``type(1) legacy_version(2) length(2) fragment``. Every record before the ClientHello is
  complete must be a handshake record (type 22): handshake messages cannot be interleaved with other
  record types, and a client sends nothing else first. The record version's major byte must be 3
  (its minor byte is ignored, as RFC 8446 asks); a fragment is 1 to 2^14 bytes.
* The handshake message: ``msg_type(1) length(3) body``, reassembled from as many records as the
  client split it into. It must be a client_hello (type 1) of at most ``MAX_HELLO`` bytes.
* The ClientHello body (RFC 8446 §4.1.2; RFC 5246 §7.4.1.2 for TLS 1.2 and older, where the
  extensions may be absent): version, random, session id, cipher suites, compression methods,
  extensions. Every vector is bounds-checked against its parent and must be consumed exactly:
  a length that points past its container, or leftovers, is malformed.

Strictness is a security property here: if the gateway and the upstream server could read
different names from one ClientHello, a client could reach a backend the routes do not send it to.
So what OpenSSL itself refuses is refused too: a repeated extension (RFC 8446 §4.2), a server_name
list that is not exactly one host_name (OpenSSL accepts no other shape), and a name that is not a
DNS host name (RFC 6066: ASCII, no IP literal). The name is returned lower-case without a trailing
dot, the form route hosts are written in.

Plain text (``GET / HTTP/1.1``) is reported as ``not_tls`` from its first byte, without waiting for
more, so a confused HTTP client is closed at once rather than at the ClientHello timeout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

RECORD_HEADER = 5
MAX_FRAGMENT = 1 << 14  # RFC 8446 §5.1: a record's fragment is at most 2^14 bytes
# The largest ClientHello accepted (its 4-byte handshake header included). Browsers send 0.5-2 KiB
# (a post-quantum key share included); 16 KiB leaves room for long session tickets and PSKs.
MAX_HELLO = 1 << 14
# Raw bytes held before the ClientHello is complete: the message plus the headers of the records
# that carry it. A client that cuts it into more than ~100 records is refused, not buffered.
MAX_BUFFERED = MAX_HELLO + 100 * RECORD_HEADER

HANDSHAKE = 22
CLIENT_HELLO = 1
EXT_SERVER_NAME = 0
EXT_ALPN = 16
HOST_NAME = 0

RejectKind = Literal["not_tls", "malformed", "too_large"]

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_IPV4 = re.compile(r"[0-9]+(\.[0-9]+){3}")


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What the ClientHello told about the connection: enough to route and to log."""

    server_name: str | None  # lower-case, no trailing dot; None: the client sent no SNI
    alpn: tuple[str, ...]  # protocols offered, in the client's order; () without ALPN
    version: int  # legacy_version of the hello (0x0303 for TLS 1.2 and 1.3 clients)
    size: int  # bytes of the records that carried the hello


@dataclass(frozen=True, slots=True)
class Rejected:
    """The bytes are not a ClientHello this gateway will route: close the connection."""

    kind: RejectKind
    reason: str


Result = ClientHello | Rejected | None


class _Malformed(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Reader:
    """Bounds-checked reads from ``data[start:end]``; an over-read raises ``_Malformed``."""

    __slots__ = ("data", "end", "pos", "what")

    def __init__(self, data: bytes, start: int, end: int, what: str) -> None:
        self.data = data
        self.pos = start
        self.end = end
        self.what = what

    def left(self) -> int:
        return self.end - self.pos

    def take(self, size: int, field: str) -> bytes:
        if size > self.end - self.pos:
            raise _Malformed(
                f"{field}: {size} bytes announced, {self.end - self.pos} left in {self.what}"
            )
        start = self.pos
        self.pos += size
        return self.data[start : self.pos]

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "big")

    def vector(self, length_size: int, field: str) -> _Reader:
        """The vector at the read position (``length_size``-byte length prefix), as a reader."""
        length = self.uint(length_size, f"{field} length")
        if length > self.end - self.pos:
            raise _Malformed(
                f"{field}: {length} bytes announced, {self.end - self.pos} left in {self.what}"
            )
        start = self.pos
        self.pos += length
        return _Reader(self.data, start, start + length, field)

    def done(self) -> None:
        if self.pos != self.end:
            raise _Malformed(f"{self.end - self.pos} unexpected bytes at the end of {self.what}")


class ClientHelloParser:
    """Feed bytes with ``feed`` until it returns a ``ClientHello`` or a ``Rejected``.

    Once it has answered, the answer is final: later ``feed`` calls return it again and ignore
    their bytes (which belong to the stream the caller relays: TLS 1.3 early data, for instance).
    """

    __slots__ = ("_buffer", "_handshake", "_pos", "_result")

    def __init__(self) -> None:
        self._buffer = bytearray()  # raw bytes received, until the answer
        self._pos = 0  # start of the first record not yet taken into _handshake
        self._handshake = bytearray()  # the handshake message, reassembled from fragments
        self._result: ClientHello | Rejected | None = None

    @property
    def result(self) -> Result:
        return self._result

    def feed(self, data: bytes) -> Result:
        if self._result is not None:
            return self._result
        self._buffer += data
        try:
            hello = self._parse()
        except _Malformed as exc:
            self._result = Rejected("malformed", exc.reason)
        else:
            if hello is not None:
                self._result = hello
            elif len(self._buffer) > MAX_BUFFERED:
                self._result = Rejected(
                    "too_large", f"no complete ClientHello in the first {MAX_BUFFERED} bytes"
                )
        if self._result is not None:
            self._buffer = bytearray()
            self._handshake = bytearray()
        return self._result

    def _parse(self) -> ClientHello | Rejected | None:
        buffer = self._buffer
        while True:
            available = len(buffer) - self._pos
            rejected = self._check_record_header(buffer, self._pos, available)
            if rejected is not None:
                return rejected
            if available < RECORD_HEADER:
                return None
            length = int.from_bytes(buffer[self._pos + 3 : self._pos + 5], "big")
            if available < RECORD_HEADER + length:
                return None
            start = self._pos + RECORD_HEADER
            self._handshake += buffer[start : start + length]
            self._pos = start + length
            rejected = self._check_message_header()
            if rejected is not None:
                return rejected
            handshake = self._handshake
            if len(handshake) >= 4:
                body_length = int.from_bytes(handshake[1:4], "big")
                if len(handshake) >= 4 + body_length:
                    return _parse_body(bytes(handshake), 4, 4 + body_length, self._pos)

    def _check_record_header(self, buffer: bytearray, pos: int, available: int) -> Rejected | None:
        """Judge a record header from as many of its bytes as have arrived."""
        if available >= 1 and buffer[pos] != HANDSHAKE:
            first = buffer[pos]
            if pos == 0:
                return Rejected("not_tls", _not_tls_reason(bytes(buffer[:8])))
            return Rejected(
                "malformed",
                f"a record of content type {first} inside the ClientHello "
                "(handshake messages cannot be interleaved with other records)",
            )
        if available >= 2 and buffer[pos + 1] != 3:
            kind: RejectKind = "not_tls" if pos == 0 else "malformed"
            return Rejected(kind, f"record version {buffer[pos + 1]}.x is not TLS (3.x)")
        if available >= RECORD_HEADER:
            length = int.from_bytes(buffer[pos + 3 : pos + 5], "big")
            if length == 0:
                return Rejected("malformed", "an empty handshake record (RFC 8446 §5.1)")
            if length > MAX_FRAGMENT:
                return Rejected(
                    "malformed", f"a record of {length} bytes (at most {MAX_FRAGMENT} allowed)"
                )
        return None

    def _check_message_header(self) -> Rejected | None:
        handshake = self._handshake
        if handshake and handshake[0] != CLIENT_HELLO:
            return Rejected(
                "malformed", f"first handshake message is of type {handshake[0]}, not ClientHello"
            )
        if len(handshake) >= 4:
            size = 4 + int.from_bytes(handshake[1:4], "big")
            if size > MAX_HELLO:
                return Rejected(
                    "too_large", f"a ClientHello of {size} bytes (at most {MAX_HELLO} accepted)"
                )
        return None


def _not_tls_reason(start: bytes) -> str:
    if start[:1].isalpha() and start[:1].isupper():
        text = start.split(b" ", 1)[0].decode("ascii", "backslashreplace")
        return f"plain text, not TLS (starts with {text!r}: an HTTP request?)"
    if start[:1] == b"\x80":
        return "an SSL 2.0 ClientHello (not supported)"
    return f"not TLS: the first record's content type is {start[0]}, not handshake (22)"


def _parse_body(data: bytes, start: int, end: int, size: int) -> ClientHello:
    body = _Reader(data, start, end, "the ClientHello")
    version = body.uint(2, "legacy_version")
    if version >> 8 != 3:
        raise _Malformed(f"ClientHello version {version:#06x} is not TLS")
    body.take(32, "random")
    session_id = body.vector(1, "legacy_session_id")
    if session_id.left() > 32:
        raise _Malformed(f"a session id of {session_id.left()} bytes (at most 32)")
    suites = body.vector(2, "cipher_suites")
    if suites.left() < 2 or suites.left() % 2:
        raise _Malformed(f"cipher_suites of {suites.left()} bytes (a non-empty list of 2-byte ids)")
    if body.vector(1, "compression_methods").left() < 1:
        raise _Malformed("no compression method offered")
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    if body.left():  # absent in hellos of TLS 1.2 and older clients that offer no extension
        extensions = body.vector(2, "extensions")
        seen: set[int] = set()
        while extensions.left():
            kind = extensions.uint(2, "extension type")
            content = extensions.vector(2, f"extension {kind}")
            if kind in seen:
                raise _Malformed(f"extension {kind} appears twice (RFC 8446 §4.2)")
            seen.add(kind)
            if kind == EXT_SERVER_NAME:
                server_name = _server_name(content)
            elif kind == EXT_ALPN:
                alpn = _alpn(content)
    body.done()
    return ClientHello(server_name, alpn, version, size)


def _server_name(content: _Reader) -> str:
    """RFC 6066 §3, read as OpenSSL does: exactly one entry, of type host_name."""
    names = content.vector(2, "server_name_list")
    content.done()
    name_type = names.uint(1, "server name type")
    if name_type != HOST_NAME:
        raise _Malformed(f"server name of type {name_type}, not host_name")
    host = names.vector(2, "host_name")
    raw = host.take(host.left(), "host_name")
    names.done()
    return host_name(raw)


def host_name(raw: bytes) -> str:
    """A HostName from the wire as route hosts are written (lower-case, no trailing dot); raises
    ``ValueError`` saying why when it is not a DNS host name."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise _Malformed("server name is not ASCII (RFC 6066: IDNs are sent as A-labels)") from None
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    shown = text[:80].encode("ascii", "backslashreplace").decode("ascii")
    if not name or len(name) > 253:
        raise _Malformed(f"server name {shown!r} is not a host name (1 to 253 characters)")
    if not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise _Malformed(f"server name {shown!r} is not a host name (labels of a-z, 0-9, '-')")
    if _IPV4.fullmatch(name):
        raise _Malformed(f"server name {shown!r} is an IP address (RFC 6066 §3 forbids them)")
    return name


def _alpn(content: _Reader) -> tuple[str, ...]:
    """RFC 7301 §3.1: a non-empty list of non-empty protocol names."""
    names = content.vector(2, "protocol_name_list")
    content.done()
    if not names.left():
        raise _Malformed("an empty ALPN protocol list")
    protocols = []
    while names.left():
        protocol = names.vector(1, "protocol name")
        if not protocol.left():
            raise _Malformed("an empty ALPN protocol name")
        raw = protocol.take(protocol.left(), "protocol name")
        protocols.append(raw.decode("ascii", "backslashreplace"))
    return tuple(protocols)
