"""Raw HTTP/1.1 clients for exact-byte tests, with responses parsed by ``h11``.

Requests are written byte for byte as the test gives them (nothing is normalized), and responses
are read with ``h11``, an independent parser: a response the gateway frames wrongly fails here
rather than being smoothed over. Large bodies go through one reusable buffer in both directions.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Self

from tests.support.chunked import ChunkedDecoder
from tests.support.pattern import pattern_views
from tests.support.responses import (
    Response,
    ResponseReader,
    body_framing,
    decode_headers,
    parse_head,
    parse_responses,
)

__all__ = [
    "KeepAliveClient",
    "Response",
    "build_request",
    "parse_responses",
    "request",
    "send_raw",
    "stream_download",
    "stream_upload",
]

HeaderInput = Sequence[tuple[str, str]] | Mapping[str, str] | None
RECV_SIZE = 1 << 16


def _socket_source(sock: socket.socket) -> Callable[[], bytes]:
    def receive() -> bytes:
        try:
            return sock.recv(RECV_SIZE)
        except ConnectionResetError:
            return b""  # a reset ends the stream like a close does, as far as tests care

    return receive


def _header_items(headers: HeaderInput) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def build_request(
    method: str,
    path: str,
    *,
    headers: HeaderInput = None,
    body: bytes = b"",
    host: str | None = "test.local",
    http_version: str = "1.1",
) -> bytes:
    """Request bytes as written: Host and Content-Length are added unless given or unwanted."""
    items = _header_items(headers)
    names = {name.lower() for name, _ in items}
    lines = [f"{method} {path} HTTP/{http_version}"]
    if host is not None and "host" not in names:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in items]
    framed = "content-length" in names or "transfer-encoding" in names
    if not framed and (body or method in ("POST", "PUT", "PATCH")):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def recv_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read ``sock`` until the blank line that ends a message head: (the head without the blank
    line, the bytes read after it). EOFError when the peer closes before."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(f"closed before the end of a head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send_raw(
    port: int, data: bytes, *, timeout: float = 5.0, read_until_close: bool = True
) -> bytes:
    """Send ``data`` as is and return the raw bytes received.

    With ``read_until_close`` (the default) everything up to the server's close (or reset);
    otherwise up to the end of the first complete response. ``TimeoutError`` when that does not
    happen within ``timeout`` seconds of silence.
    """
    with connect(port, timeout) as sock:
        sock.sendall(data)
        received = bytearray()
        receive = _socket_source(sock)
        while True:
            try:
                chunk = receive()
            except TimeoutError as exc:
                raise TimeoutError(
                    f"no close after {timeout}s; received {bytes(received)!r}"
                ) from exc
            if not chunk:
                return bytes(received)
            received += chunk
            if not read_until_close and _holds_complete_response(bytes(received)):
                return bytes(received)


class _NeedMoreData(Exception):
    pass


def _holds_complete_response(data: bytes) -> bool:
    chunks = [data]

    def receive() -> bytes:
        # Never an end of stream: a body delimited by the close is not complete yet.
        if chunks:
            return chunks.pop()
        raise _NeedMoreData

    try:
        ResponseReader(receive).read()
    except _NeedMoreData:
        return False
    return True


def request(
    port: int,
    method: str,
    path: str,
    *,
    headers: HeaderInput = None,
    body: bytes = b"",
    host: str | None = "test.local",
    timeout: float = 5.0,
) -> Response:
    """One request on a fresh connection; the connection is closed after its response."""
    with connect(port, timeout) as sock:
        sock.sendall(build_request(method, path, headers=headers, body=body, host=host))
        return ResponseReader(_socket_source(sock)).read(method)


class KeepAliveClient:
    """Several requests on one connection, responses read one at a time and in order.

    ``send_request`` may be called several times before reading (pipelining); ``read_response``
    then returns the answers in request order. ``server_closed`` tells whether the server has
    closed the connection.
    """

    def __init__(self, port: int, *, timeout: float = 5.0, host: str | None = "test.local") -> None:
        self.host = host
        self.sock = connect(port, timeout)
        self._reader = ResponseReader(_socket_source(self.sock))
        self._pending_methods: list[str] = []

    def send(self, data: bytes, method: str = "GET") -> None:
        """Send raw bytes holding one request; ``method`` tells how to read its answer."""
        self.sock.sendall(data)
        self._pending_methods.append(method)

    def send_request(
        self, method: str, path: str, *, headers: HeaderInput = None, body: bytes = b""
    ) -> None:
        self.send(build_request(method, path, headers=headers, body=body, host=self.host), method)

    def read_response(self) -> Response:
        method = self._pending_methods.pop(0) if self._pending_methods else "GET"
        return self._reader.read(method)

    def read_interim(self) -> Response:
        """The next 1xx response (such as ``100 Continue``) of the request being answered."""
        method = self._pending_methods[0] if self._pending_methods else "GET"
        return self._reader.read(method, interim=True)

    def request(
        self, method: str, path: str, *, headers: HeaderInput = None, body: bytes = b""
    ) -> Response:
        self.send_request(method, path, headers=headers, body=body)
        return self.read_response()

    def server_closed(self, timeout: float = 1.0) -> bool:
        """True when the server closes (or resets) within ``timeout`` s with nothing more sent."""
        previous = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            return self._reader.wait_for_close()
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(previous)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def stream_upload(
    port: int,
    path: str,
    total_bytes: int,
    chunked: bool,
    *,
    method: str = "POST",
    headers: HeaderInput = None,
    host: str | None = "test.local",
    chunk_size: int = 256 * 1024,
    timeout: float = 60.0,
) -> Response:
    """Upload ``total_bytes`` of the test pattern (see ``pattern.py``) and read the answer.

    The body is sent from one shared buffer, never built whole. If the server answers early and
    stops reading (a 413, say), sending stops and that answer is returned.
    """
    framing = ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(total_bytes))
    head = build_request(method, path, headers=[*_header_items(headers), framing], host=host)
    with connect(port, timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head)
            for view in pattern_views(total_bytes, chunk_size):
                if chunked:
                    sock.sendall(b"%x\r\n" % len(view))
                    sock.sendall(view)
                    sock.sendall(b"\r\n")
                else:
                    sock.sendall(view)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        return ResponseReader(_socket_source(sock)).read(method)


def stream_download(
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: HeaderInput = None,
    host: str | None = "test.local",
    timeout: float = 60.0,
) -> tuple[Response, int, str]:
    """Download ``path`` counting and hashing the body as it arrives, never holding it whole.

    Returns the response (``body`` empty; ``trailers`` filled for a chunked body), the body length
    and its hex SHA-256. Framing follows RFC 9112 §6.3: chunked, Content-Length, or until close.
    """
    with connect(port, timeout) as sock:
        sock.sendall(build_request(method, path, headers=headers, host=host))
        buffer = bytearray(1 << 20)
        view = memoryview(buffer)
        head = bytearray()
        while True:
            end = head.find(b"\r\n\r\n")
            if end < 0:
                received = sock.recv_into(buffer)
                if not received:
                    raise ConnectionError(f"closed before the end of the head: {bytes(head)!r}")
                head += view[:received]
                continue
            response = parse_head(bytes(head[: end + 4]), method)
            del head[: end + 4]
            if response.status >= 200:
                break  # 1xx interim responses are skipped
        leftover = bytes(head)
        digest = hashlib.sha256()
        count = 0

        def consume(data: memoryview) -> None:
            nonlocal count
            count += len(data)
            digest.update(data)

        framing = body_framing(response, method)
        if framing == "chunked":
            decoder = ChunkedDecoder(consume)
            decoder.feed(leftover, 0, len(leftover))
            while not decoder.done:
                received = sock.recv_into(buffer)
                if not received:
                    raise ConnectionError(f"closed {count} bytes into the chunked body of {path}")
                decoder.feed(buffer, 0, received)
            response.trailers = decode_headers(decoder.trailers)
        elif framing == "close":
            consume(memoryview(leftover))
            while received := sock.recv_into(buffer):
                consume(view[:received])
        elif framing != "none":
            remaining = int(framing)
            consume(memoryview(leftover)[:remaining])
            remaining -= min(remaining, len(leftover))
            while remaining > 0:
                received = sock.recv_into(buffer, min(remaining, len(buffer)))
                if not received:
                    raise ConnectionError(f"closed {count} bytes into the body of {path}")
                consume(view[:received])
                remaining -= received
        return response, count, digest.hexdigest()
