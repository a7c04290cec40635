"""The test helpers themselves: real backends, raw clients, the pattern, /proc readers."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.backends import Backend, refused_port
from tests.support.chunked import ChunkedDecoder
from tests.support.client import (
    KeepAliveClient,
    build_request,
    parse_responses,
    request,
    send_raw,
    stream_download,
    stream_upload,
)
from tests.support.pattern import PERIOD, pattern_bytes, pattern_sha256, pattern_views
from tests.support.processes import free_port, process_group_pids, rss_bytes


@pytest.fixture
def backend() -> Iterator[Backend]:
    with Backend("alpha") as started:
        yield started


# ---------------------------------------------------------------------------------- pattern


def test_pattern_is_the_same_however_it_is_chunked() -> None:
    whole = pattern_bytes(3 * PERIOD + 7)
    assert whole[:3] == b"\x00\x01\x02"
    assert whole[PERIOD] == 0
    assert whole[PERIOD - 1] == PERIOD - 1
    for size in (1, 100, 256, 4096):
        assert b"".join(pattern_views(len(whole), size)) == whole
    assert pattern_bytes(10, offset=PERIOD + 5) == whole[PERIOD + 5 : PERIOD + 15]
    assert pattern_sha256(len(whole)) == hashlib.sha256(whole).hexdigest()


# ---------------------------------------------------------------------------------- backend


def test_echo_reports_the_request_and_records_it(backend: Backend) -> None:
    response = request(
        backend.port, "POST", "/a%20b?x=1&x=2", headers=[("X-One", "1"), ("x-one", "2")], body=b"hi"
    )

    assert response.status == 200
    assert response.header("content-type") == "application/json"
    assert response.json() == {
        "backend": "alpha",
        "method": "POST",
        "target": "/a%20b?x=1&x=2",
        "headers": {"host": "test.local", "x-one": "1, 2", "content-length": "2"},
        "body_bytes": 2,
        "body_sha256": hashlib.sha256(b"hi").hexdigest(),
    }
    (record,) = backend.wait_for_requests(1)
    assert record.method == "POST"
    assert record.target == b"/a%20b?x=1&x=2"
    assert record.path == "/a%20b"
    assert record.http_version == "1.1"
    assert record.headers == [
        (b"Host", b"test.local"),
        (b"X-One", b"1"),
        (b"x-one", b"2"),
        (b"Content-Length", b"2"),
    ]
    assert record.header("X-ONE") == "1, 2"
    assert record.body_bytes == 2
    assert record.trailers == []


def test_status_paths_and_head(backend: Backend) -> None:
    not_found = request(backend.port, "GET", "/status/404")
    assert (not_found.status, not_found.reason) == (404, "Not Found")
    assert not_found.body == b"status 404\n"

    no_content = request(backend.port, "GET", "/status/204")
    assert no_content.status == 204
    assert no_content.body == b""
    assert no_content.header("content-length") is None

    head = request(backend.port, "HEAD", "/status/503")
    assert (head.status, head.body, head.header("content-length")) == (503, b"", "11")


@pytest.mark.parametrize("chunked", [False, True])
def test_stream_download_counts_and_hashes_the_pattern(backend: Backend, chunked: bool) -> None:
    total = 3_000_017
    response, count, digest = stream_download(
        backend.port, f"/stream?bytes={total}&chunked={int(chunked)}&chunk=100000"
    )

    assert response.status == 200
    assert response.header("transfer-encoding") == ("chunked" if chunked else None)
    assert response.header("content-length") == (None if chunked else str(total))
    assert (count, digest) == (total, pattern_sha256(total))


@pytest.mark.parametrize("chunked", [False, True])
def test_stream_upload_reaches_the_backend_intact(backend: Backend, chunked: bool) -> None:
    total = 2_500_001
    response = stream_upload(backend.port, "/upload", total, chunked, chunk_size=65_536)

    assert response.status == 200
    assert response.json()["body_bytes"] == total
    assert response.json()["body_sha256"] == pattern_sha256(total)
    (record,) = backend.wait_for_requests(1)
    assert record.header("transfer-encoding") == ("chunked" if chunked else None)
    assert (record.body_bytes, record.body_sha256) == (total, pattern_sha256(total))


def test_trailers_are_sent_and_parsed(backend: Backend) -> None:
    response = request(backend.port, "GET", "/trailers")

    assert response.body == b"helloworld"
    assert response.trailers == [("x-checksum", "abc"), ("x-count", "2")]
    assert response.trailer("X-Count") == "2"
    _, count, digest = stream_download(backend.port, "/trailers")
    assert (count, digest) == (10, hashlib.sha256(b"helloworld").hexdigest())


def test_chunked_request_trailers_are_recorded(backend: Backend) -> None:
    raw = (
        b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"3\r\nabc\r\n0\r\nX-Sum: 9\r\n\r\n"
    )
    (response,) = parse_responses(send_raw(backend.port, raw))

    assert response.json()["body_bytes"] == 3
    assert backend.wait_for_requests(1)[0].trailers == [(b"X-Sum", b"9")]


def test_until_close_has_no_framing_and_ends_with_the_connection(backend: Backend) -> None:
    raw = send_raw(backend.port, build_request("GET", "/until-close"))

    assert raw == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nstreamed until close"
    (response,) = parse_responses(raw)
    assert response.body == b"streamed until close"
    _, count, _ = stream_download(backend.port, "/until-close")
    assert count == len(b"streamed until close")


def test_pipelined_requests_are_answered_in_order_on_one_connection(backend: Backend) -> None:
    with KeepAliveClient(backend.port) as client:
        client.send_request("GET", "/slow?delay=0.05")
        client.send_request("HEAD", "/status/201")
        client.send_request("GET", "/third")
        slow, created, third = (client.read_response() for _ in range(3))
        again = client.request("GET", "/fourth")
        assert not client.server_closed(0.05)

    assert (slow.status, slow.body) == (200, b"slow")
    assert (created.status, created.body) == (201, b"")
    assert third.json()["target"] == "/third"
    assert again.json()["target"] == "/fourth"
    assert backend.connections_accepted == 1


def test_close_after_response_and_http10(backend: Backend) -> None:
    with KeepAliveClient(backend.port) as client:
        assert client.request("GET", "/x").header("connection") is None
        backend.close_after_response = True
        assert client.request("GET", "/y").header("connection") == "close"
        assert client.server_closed(1.0)

    backend.close_after_response = False
    raw = send_raw(backend.port, b"GET /old HTTP/1.0\r\n\r\n")
    (response,) = parse_responses(raw)
    assert response.header("connection") == "close"
    assert backend.requests[-1].http_version == "1.0"


def test_send_raw_can_stop_after_one_response(backend: Backend) -> None:
    raw = send_raw(backend.port, build_request("GET", "/status/200"), read_until_close=False)
    assert (
        raw
        == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nstatus 200\n"
    )


def test_hang_never_answers_and_reset_closes_without_answer(backend: Backend) -> None:
    with KeepAliveClient(backend.port) as client:
        client.send_request("GET", "/hang")
        assert not client.server_closed(0.2)
    assert send_raw(backend.port, build_request("GET", "/reset")) == b""
    with pytest.raises(ConnectionError):
        request(backend.port, "GET", "/reset")


def test_continue_is_sent_before_the_body_is_read(backend: Backend) -> None:
    head = build_request(
        "PUT", "/continue", headers=[("Expect", "100-continue"), ("Content-Length", "5")]
    )
    with KeepAliveClient(backend.port) as client:
        client.send(head, "PUT")
        interim = client.read_interim()
        client.sock.sendall(b"hello")
        final = client.read_response()

    assert (interim.status, interim.reason) == (100, "Continue")
    assert final.status == 200
    assert final.json()["body_sha256"] == hashlib.sha256(b"hello").hexdigest()


def test_interim_responses_are_attached_to_the_final_one(backend: Backend) -> None:
    raw = build_request(
        "POST",
        "/continue",
        headers=[("Expect", "100-continue"), ("Connection", "close")],
        body=b"x",
    )
    (response,) = parse_responses(send_raw(backend.port, raw))

    assert [r.status for r in response.informational] == [100]
    assert response.json()["body_bytes"] == 1


def test_delay_applies_to_every_answer(backend: Backend) -> None:
    backend.set_delay(0.15)
    started = time.monotonic()
    assert request(backend.port, "GET", "/").status == 200
    assert time.monotonic() - started >= 0.15


def test_malformed_request_gets_400(backend: Backend) -> None:
    (response,) = parse_responses(send_raw(backend.port, b"GARBAGE\x00\r\n\r\n"))
    assert response.status == 400


def test_stop_closes_open_connections() -> None:
    backend = Backend("beta").start()
    with KeepAliveClient(backend.port) as client:
        assert client.request("GET", "/").status == 200
        assert backend.open_connections == 1
        backend.stop()
        assert client.server_closed(1.0)
    assert backend.open_connections == 0


def test_refused_port_refuses() -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", refused_port()), timeout=1).close()


# ---------------------------------------------------------------------------------- parsing


def test_parse_responses_follows_request_methods() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno"
    )
    head, missing = parse_responses(raw, ["HEAD", "GET"])

    assert (head.status, head.body, head.header("Content-Length")) == (200, b"", "5")
    assert (missing.status, missing.reason, missing.body) == (404, "Not Found", b"no")


def test_parse_responses_rejects_truncation_and_bytes_after_close() -> None:
    with pytest.raises(ValueError, match="response 1"):
        parse_responses(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc")
    with pytest.raises(ValueError, match="response 2"):
        parse_responses(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n"
        )


def test_chunked_decoder_handles_any_split() -> None:
    body = b"4;ext=1\r\nWiki\r\n6\r\npedia \r\n0\r\nX-A: 1\r\n\r\nNEXT"
    for step in (1, 2, 3, len(body)):
        data = bytearray()
        decoder = ChunkedDecoder(data.extend)
        position = 0
        while not decoder.done:
            position = decoder.feed(body, position, min(position + step, len(body)))
        assert bytes(data) == b"Wikipedia "
        assert decoder.trailers == [(b"X-A", b"1")]
        assert body[position:] == b"NEXT"


# ---------------------------------------------------------------------------------- processes


def test_process_helpers_read_proc() -> None:
    assert rss_bytes(os.getpid()) > 1024 * 1024
    assert os.getpid() in process_group_pids(os.getpgid(0))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))  # free: binding succeeds
