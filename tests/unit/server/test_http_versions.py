"""What ``exchange_builder.new_exchange`` assumes of llhttp to skip ``get_http_version()``.

A request that llhttp calls keep-alive and that carries no Connection field is taken as HTTP/1.1
without asking the parser for its version (RFC 9112 §9.3: only 1.1 persists by default). That
holds while llhttp accepts no version other than 0.9, 1.0, 1.1 and 2.0; these tests say so, so an
httptools upgrade that changes it is noticed.
"""

from __future__ import annotations

import httptools
import pytest


class _Head:
    """Reads the parser in on_headers_complete, as the gateway does (llhttp forgets the message's
    keep-alive flags once it is complete)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.keep_alive = False
        self.version = ""

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        self.version = self.parser.get_http_version()


def _parse(version: bytes, connection: bytes | None = None) -> _Head:
    head = _Head()
    field = b"Connection: %s\r\n" % connection if connection is not None else b""
    head.parser.feed_data(b"GET / HTTP/%s\r\nHost: a\r\n%s\r\n" % (version, field))
    return head


@pytest.mark.parametrize("version", [b"1.2", b"1.9", b"2.1", b"3.0", b"9.9"])
def test_llhttp_rejects_other_versions(version: bytes) -> None:
    with pytest.raises(httptools.HttpParserError):
        _parse(version)


@pytest.mark.parametrize(
    ("version", "keep_alive"), [(b"0.9", False), (b"1.0", False), (b"1.1", True), (b"2.0", False)]
)
def test_without_connection_only_http11_is_keep_alive(version: bytes, keep_alive: bool) -> None:
    head = _parse(version)
    assert head.keep_alive is keep_alive
    assert head.version == version.decode()


def test_a_connection_field_makes_http10_keep_alive_too() -> None:
    # Why the shortcut requires the absence of Connection: with it, 1.0 may be keep-alive.
    assert _parse(b"1.0", b"keep-alive").keep_alive
