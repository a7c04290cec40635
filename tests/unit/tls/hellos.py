"""ClientHellos for the parser tests: real ones from Python's ssl, and hand-built ones.

Real hellos come from an ``SSLObject`` over memory BIOs: the handshake's first flight is read from
the outgoing BIO, no socket involved. Hand-built ones cover what a real client never sends (bad
lengths, duplicate extensions, odd names) and what it rarely does (a hello cut into many records).
"""

from __future__ import annotations

import contextlib
import ssl


def real_hello(
    server_name: str | None = None,
    *,
    alpn: list[str] | None = None,
    maximum_version: ssl.TLSVersion | None = None,
) -> bytes:
    """The first flight of a Python TLS client: one record holding its ClientHello."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    if maximum_version is not None:
        context.maximum_version = maximum_version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for a ServerHello
        client.do_handshake()
    return outgoing.read()


def u8(value: int) -> bytes:
    return value.to_bytes(1, "big")


def u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def vec8(data: bytes) -> bytes:
    return u8(len(data)) + data


def vec16(data: bytes) -> bytes:
    return u16(len(data)) + data


def extension(kind: int, data: bytes) -> bytes:
    return u16(kind) + vec16(data)


def sni(*names: bytes, name_type: int = 0) -> bytes:
    return extension(0, vec16(b"".join(u8(name_type) + vec16(name) for name in names)))


def alpn(*protocols: bytes) -> bytes:
    return extension(16, vec16(b"".join(vec8(p) for p in protocols)))


def padding(size: int) -> bytes:
    return extension(21, bytes(size))  # RFC 7685


def body(
    extensions: bytes | None,
    *,
    version: bytes = b"\x03\x03",
    session_id: bytes = b"",
    suites: bytes = b"\x13\x01\x13\x02",
    compression: bytes = b"\x00",
    trailing: bytes = b"",
) -> bytes:
    """A ClientHello body; ``extensions=None`` leaves the extensions block out (TLS 1.0 style)."""
    data = version + bytes(32) + vec8(session_id) + vec16(suites) + vec8(compression)
    if extensions is not None:
        data += vec16(extensions)
    return data + trailing


def message(hello_body: bytes, msg_type: int = 1) -> bytes:
    """The handshake message: type, 3-byte length, body."""
    return u8(msg_type) + len(hello_body).to_bytes(3, "big") + hello_body


def records(handshake: bytes, sizes: list[int] | None = None, *, content_type: int = 22) -> bytes:
    """``handshake`` framed into records whose fragments have ``sizes`` (the rest in a last one)."""
    out = b""
    position = 0
    for size in [*(sizes or []), len(handshake)]:
        fragment = handshake[position : position + size]
        if not fragment:
            break
        out += u8(content_type) + b"\x03\x01" + vec16(fragment)
        position += len(fragment)
    return out


def hello(*extensions: bytes, sizes: list[int] | None = None, **fields: bytes) -> bytes:
    """A whole hand-built ClientHello with these extensions, in records of ``sizes``."""
    return records(message(body(b"".join(extensions), **fields)), sizes)


def handshake_of(real: bytes) -> bytes:
    """The handshake message inside a one-record hello."""
    assert real[0] == 22 and int.from_bytes(real[3:5], "big") == len(real) - 5
    return real[5:]
