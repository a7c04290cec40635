"""The sans-IO ClientHello parser: real hellos, any split of the bytes, and every refusal."""

from __future__ import annotations

import random
import ssl

import pytest

from portway.tls.client_hello import (
    MAX_BUFFERED,
    MAX_HELLO,
    ClientHello,
    ClientHelloParser,
    Rejected,
    host_name,
)
from tests.unit.tls.hellos import (
    alpn,
    body,
    extension,
    handshake_of,
    hello,
    message,
    padding,
    real_hello,
    records,
    sni,
    u16,
    vec16,
)


def parse(data: bytes) -> ClientHello | Rejected | None:
    return ClientHelloParser().feed(data)


def parsed(data: bytes) -> ClientHello:
    result = parse(data)
    assert isinstance(result, ClientHello), result
    return result


def rejected(data: bytes) -> Rejected:
    result = parse(data)
    assert isinstance(result, Rejected), result
    return result


# ------------------------------------------------------------------------------ real ClientHellos


def test_a_real_hello_gives_its_server_name() -> None:
    data = real_hello("a.example.com")
    result = parsed(data)
    assert result.server_name == "a.example.com"
    assert result.alpn == ()
    assert result.version == 0x0303
    assert result.size == len(data)


def test_a_real_hello_gives_its_alpn_list_in_order() -> None:
    result = parsed(real_hello("api.example.com", alpn=["h2", "http/1.1"]))
    assert result.server_name == "api.example.com"
    assert result.alpn == ("h2", "http/1.1")


def test_a_tls_1_2_only_hello() -> None:
    data = real_hello("old.example.com", maximum_version=ssl.TLSVersion.TLSv1_2)
    result = parsed(data)
    assert (result.server_name, result.version, result.size) == (
        "old.example.com",
        0x0303,
        len(data),
    )


def test_a_real_hello_without_sni() -> None:
    assert parsed(real_hello(None)).server_name is None
    # Python sends no SNI for an IP address (RFC 6066 forbids it).
    assert parsed(real_hello("127.0.0.1")).server_name is None


def test_fed_byte_by_byte_it_needs_more_until_the_last_byte() -> None:
    data = real_hello("a.example.com", alpn=["http/1.1"])
    parser = ClientHelloParser()
    for byte in data[:-1]:
        assert parser.feed(bytes([byte])) is None
    result = parser.feed(data[-1:])
    assert isinstance(result, ClientHello)
    assert (result.server_name, result.alpn, result.size) == (
        "a.example.com",
        ("http/1.1",),
        len(data),
    )
    assert parser.result is result


def test_every_split_into_two_reads_gives_the_same_answer() -> None:
    data = real_hello("b.example.com")
    expected = parsed(data)
    for cut in range(len(data) + 1):
        parser = ClientHelloParser()
        first = parser.feed(data[:cut])
        assert first is None or cut == len(data)
        assert parser.feed(data[cut:]) == expected


@pytest.mark.parametrize("sizes", [[1], [1, 3], [4], [2, 2, 2, 2], [100, 100], [1] * 600])
def test_a_hello_fragmented_across_records(sizes: list[int]) -> None:
    """RFC 8446 §5.1: a handshake message may span records, even its 4-byte header."""
    real = real_hello("split.example.com", alpn=["h2"])
    data = records(handshake_of(real), sizes)
    assert data != real
    result = parsed(data)
    assert (result.server_name, result.alpn, result.size) == (
        "split.example.com",
        ("h2",),
        len(data),
    )
    parser = ClientHelloParser()  # and fed byte by byte as well
    results = [parser.feed(bytes([b])) for b in data]
    assert results[:-1] == [None] * (len(data) - 1)
    assert results[-1] == result


def test_bytes_after_the_hello_are_left_to_the_caller() -> None:
    """TLS 1.3 early data may follow in the same read: the parser answers, the caller relays."""
    data = real_hello("a.example.com")
    early = b"\x17\x03\x03\x00\x05hello"
    parser = ClientHelloParser()
    result = parser.feed(data + early)
    assert isinstance(result, ClientHello) and result.size == len(data)
    assert parser.feed(b"GET / HTTP/1.1\r\n") is result  # final: later bytes change nothing


def test_name_case_and_a_trailing_dot_are_normalized() -> None:
    assert parsed(hello(sni(b"WWW.Example.COM."))).server_name == "www.example.com"


def test_a_hello_without_extensions_has_no_name() -> None:
    """RFC 5246 §7.4.1.2: a TLS 1.0-1.2 client may send no extensions block at all."""
    result = parsed(records(message(body(None, version=b"\x03\x01"))))
    assert (result.server_name, result.alpn, result.version) == (None, (), 0x0301)


def test_other_extensions_are_skipped() -> None:
    result = parsed(hello(extension(10, b"\x00\x02\x00\x1d"), sni(b"a.b"), padding(300)))
    assert result.server_name == "a.b"


# ------------------------------------------------------------------------------- not TLS at all


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n",
        b"G",
        b"PRI * HTTP/2.0\r\n",
        b"SSH-2.0-x\r\n",
    ],
)
def test_plain_text_is_not_tls_from_its_first_byte(data: bytes) -> None:
    result = rejected(data)
    assert result.kind == "not_tls"
    assert "plain text" in result.reason


def test_a_first_record_that_is_not_a_handshake_is_refused() -> None:
    result = rejected(b"\x17\x03\x03\x00\x05hello")  # application data
    assert result.kind == "not_tls"
    assert "content type is 23" in result.reason
    assert rejected(b"\x15").kind == "not_tls"  # an alert, judged from one byte


def test_an_ssl2_hello_and_a_wrong_record_version_are_not_tls() -> None:
    assert "SSL 2.0" in rejected(b"\x80\x2e\x01\x03\x01").reason
    assert rejected(b"\x16\x02").kind == "not_tls"


def test_binary_garbage_never_raises() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        result = ClientHelloParser().feed(data)
        assert result is None or isinstance(result, Rejected | ClientHello)


def test_mutated_real_hellos_never_raise_nor_read_past_their_lengths() -> None:
    """Single-byte corruptions of a real hello: each is an answer (or a need for more), never an
    exception; a corrupted length cannot make the parser read beyond what it was given."""
    data = real_hello("fuzz.example.com", alpn=["h2", "http/1.1"])
    rng = random.Random(11)
    outcomes: set[str] = set()
    for position in range(len(data)):
        corrupted = bytearray(data)
        corrupted[position] ^= 1 << rng.randrange(8)
        result = ClientHelloParser().feed(bytes(corrupted))
        outcomes.add(type(result).__name__)
        if isinstance(result, ClientHello):
            assert result.size <= len(data)
    assert {"Rejected", "ClientHello"} <= outcomes


# ------------------------------------------------------------------------------------ malformed


def test_a_truncated_hello_only_needs_more() -> None:
    data = real_hello("a.example.com")
    for cut in (1, 4, 5, 6, len(data) // 2, len(data) - 1):
        assert parse(data[:cut]) is None


def test_records_interleaved_with_another_type_are_refused() -> None:
    handshake = handshake_of(real_hello("a.example.com"))
    data = records(handshake[:10]) + b"\x15\x03\x03\x00\x02\x01\x00" + records(handshake[10:])
    result = rejected(data)
    assert result.kind == "malformed" and "interleaved" in result.reason


def test_a_handshake_message_other_than_client_hello_is_refused() -> None:
    result = rejected(records(message(body(b""), msg_type=2)))
    assert result.kind == "malformed" and "not ClientHello" in result.reason


def test_empty_and_oversized_records_are_refused() -> None:
    assert "empty" in rejected(b"\x16\x03\x01\x00\x00").reason
    assert "at most 16384" in rejected(b"\x16\x03\x01\x40\x01").reason


MALFORMED = {
    "extensions block longer than the body": (
        records(message(body(None) + u16(200) + sni(b"a.b")[:8])),
        "announced",
    ),
    "server_name list longer than its extension": (
        hello(extension(0, u16(50) + b"\x00" + vec16(b"a.b"))),
        "announced",
    ),
    "host_name longer than its list": (
        hello(extension(0, vec16(b"\x00" + u16(40) + b"a.b"))),
        "announced",
    ),
    "bytes after the host_name in its list": (
        hello(extension(0, vec16(b"\x00" + vec16(b"a.b") + b"xx"))),
        "unexpected bytes",
    ),
    "bytes after the extensions block": (
        records(message(body(sni(b"a.b"), trailing=b"\x00"))),
        "unexpected bytes at the end of the ClientHello",
    ),
    "session id of 33 bytes": (hello(sni(b"a.b"), session_id=bytes(33)), "session id of 33"),
    "odd cipher_suites length": (hello(sni(b"a.b"), suites=b"\x13"), "cipher_suites of 1"),
    "no compression method": (hello(sni(b"a.b"), compression=b""), "no compression"),
    "hello version 2.0": (hello(sni(b"a.b"), version=b"\x02\x00"), "not TLS"),
    "server_name twice": (hello(sni(b"a.b"), sni(b"c.d")), "appears twice"),
    "two names in one list": (hello(sni(b"a.b", b"c.d")), "unexpected bytes"),  # as OpenSSL
    "name type other than host_name": (hello(sni(b"a.b", name_type=1)), "not host_name"),
    "empty name": (hello(sni(b"")), "1 to 253"),
    "empty ALPN list": (hello(alpn()), "empty ALPN protocol list"),
    "empty ALPN name": (hello(alpn(b"h2", b"")), "empty ALPN protocol name"),
}


@pytest.mark.parametrize(("data", "reason"), MALFORMED.values(), ids=MALFORMED.keys())
def test_inconsistent_lengths_and_forbidden_shapes_are_malformed(data: bytes, reason: str) -> None:
    result = rejected(data)
    assert result.kind == "malformed"
    assert reason in result.reason, result.reason


def test_a_message_length_shorter_than_its_contents_is_malformed() -> None:
    """The body is read within the message's own length, never into what follows."""
    hello_body = body(sni(b"a.example.com"))
    short = b"\x01" + (len(hello_body) - 4).to_bytes(3, "big") + hello_body
    assert rejected(records(short)).kind == "malformed"


@pytest.mark.parametrize(
    "name",
    [
        b"under_score.example.com",
        b"-lead.example.com",
        b"trail-.example.com",
        b"a..b",
        b".",
        b"10.0.0.1",
        b"[::1]",
        b"caf\xc3\xa9.example",
        b"a" * 64 + b".com",
        b"sp ace.com",
        b"nul\x00.com",
    ],
)
def test_names_that_are_not_host_names_are_refused(name: bytes) -> None:
    result = rejected(hello(sni(name)))
    assert result.kind == "malformed"
    assert "server name" in result.reason


def test_host_name_rules() -> None:
    assert host_name(b"xn--caf-dma.example") == "xn--caf-dma.example"  # IDNs go as A-labels
    assert host_name(b"A-1.B") == "a-1.b"
    assert host_name(b"localhost.") == "localhost"
    assert host_name(b"1.2.3.example") == "1.2.3.example"
    with pytest.raises(ValueError, match="253"):
        host_name(b".".join([b"a" * 63] * 4) + b".com")


# ---------------------------------------------------------------------------------- size caps


def test_a_hello_announcing_more_than_the_cap_is_refused_from_its_header() -> None:
    header = b"\x16\x03\x01\x00\x04" + b"\x01" + (MAX_HELLO).to_bytes(3, "big")
    result = rejected(header)
    assert result.kind == "too_large"
    assert str(MAX_HELLO) in result.reason


def test_the_largest_accepted_hello_in_full_size_records() -> None:
    filler = MAX_HELLO - len(message(body(sni(b"big.example.com") + padding(0))))
    data = records(message(body(sni(b"big.example.com") + padding(filler))), [16000])
    assert len(data) == MAX_HELLO + 10  # two record headers
    assert parsed(data).server_name == "big.example.com"


def test_a_hello_cut_into_too_many_records_is_refused() -> None:
    """Each record costs a 5-byte header the parser must hold: the buffer cap bounds them too."""
    data = records(message(body(sni(b"a.example.com") + padding(4000))), [1] * 5000)
    parser = ClientHelloParser()
    result = None
    fed = 0
    while result is None:
        result = parser.feed(data[fed : fed + 1000])
        fed += 1000
    assert isinstance(result, Rejected) and result.kind == "too_large"
    assert fed <= MAX_BUFFERED + 1000
