"""The response head a client gets (RFC 9110 §7.6.1, RFC 9112 §6): which upstream fields pass,
whatever their spelling or length, and which Connection values name fields to drop."""

from __future__ import annotations

import pytest

from portway.proxy import response_head
from portway.upstream.forward import names_fields


def _head(headers: list[tuple[bytes, bytes]]) -> tuple[list[bytes], response_head.Framing]:
    out: list[bytes] = []
    framing = response_head.build_into(
        out, 200, b"OK", headers, b"rid-1", [], None, head_request=False, http10=False,
        close=False,
    )  # fmt: skip
    return out, framing


def _names(out: list[bytes]) -> list[bytes]:
    return [line.split(b":", 1)[0] for line in out[1:] if b":" in line]


def test_special_fields_are_dropped_in_any_case_and_their_same_length_neighbours_kept() -> None:
    """A name is classified only when its length is one a hop-by-hop or framing field has: each
    such field below goes, and a plain field of the very same length stays."""
    headers = [
        (b"CONNECTION", b"keep-alive"),  # 10
        (b"Set-Cookie", b"a=1"),  # 10, plain
        (b"Keep-Alive", b"timeout=5"),  # 10
        (b"Upgrade", b"h2c"),  # 7
        (b"Expires", b"0"),  # 7, plain
        (b"Trailer", b"x"),  # 7
        (b"te", b"trailers"),  # 2
        (b"X-Request-Id", b"upstream-id"),  # 12: the gateway's own goes out instead
        (b"Content-Type", b"text/plain"),  # 12, plain
        (b"Proxy-Connection", b"keep-alive"),  # 16
        (b"Content-Language", b"en"),  # 16, plain
        (b"Content-Length", b"3"),  # 14, kept: it frames the body
        (b"X-" + b"a" * 40, b"long"),  # longer than any special name
    ]
    out, framing = _head(headers)
    assert _names(out) == [
        b"Set-Cookie",
        b"Expires",
        b"Content-Type",
        b"Content-Language",
        b"Content-Length",
        b"X-" + b"a" * 40,
        b"x-request-id",
    ]
    assert b"x-request-id: rid-1\r\n" in out
    assert not framing.chunked and not framing.until_close


def test_transfer_encoding_of_any_spelling_is_replaced_by_the_gateways_own_framing() -> None:
    out, framing = _head([(b"TRANSFER-ENCODING", b"chunked"), (b"Date", b"today")])
    assert _names(out) == [b"Date", b"x-request-id", b"transfer-encoding"]
    assert framing.chunked


def test_fields_the_connection_field_names_are_dropped() -> None:
    out, _ = _head(
        [
            (b"Connection", b"close, X-Hop"),
            (b"X-Hop", b"1"),
            (b"X-Kept", b"2"),
            (b"Content-Length", b"0"),
        ]
    )
    assert _names(out) == [b"X-Kept", b"Content-Length", b"x-request-id"]


@pytest.mark.parametrize(
    ("value", "names"),
    [
        (b"keep-alive", False),
        (b"close", False),
        (b"Keep-Alive", False),
        (b"CLOSE", False),
        (b"keep-alive, X-Hop", True),
        (b"upgrade", True),
        (b"X-Hop", True),
    ],
)
def test_which_connection_values_may_name_fields(value: bytes, names: bool) -> None:
    assert names_fields(value) is names
