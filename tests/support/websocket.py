"""WebSocket backends and a hand-made client for the tunnel tests (RFC 6455).

``WsBackend`` is the ``websockets`` library's threaded server: a real, independent implementation
of the protocol (handshake checks, framing, close handshake). Paths: ``/echo`` echoes every
message; ``/refuse`` answers the handshake 403 and ``/plain`` answers it 200 (an upstream that
ignores the Upgrade, RFC 9110 §7.8); ``/stream`` sends ``STREAM_MESSAGES`` binary messages of
``STREAM_CHUNK`` bytes as fast as it can, counting what it managed to send; ``/bye`` closes at once.

``RawWsBackend`` is a socket server that writes its 101 and a first frame in one ``sendall`` (so
the gateway reads them in one read) and then echoes raw bytes; on the client's EOF it sends
``b"after-eof"`` and closes, which shows half-closes being passed on.

The raw client side (``handshake``, ``frame``, ``read_frame``) builds and reads frames by hand, so
a test controls exactly which bytes go in which write.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import threading
from http import HTTPStatus
from typing import Any, Self

from websockets.sync.server import Server, ServerConnection, serve

from tests.support.client import recv_head
from tests.support.lifecycle import StartStop

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
STREAM_CHUNK = 64 * 1024
STREAM_MESSAGES = 1024  # 64 MiB in all


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


class WsBackend(StartStop):
    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []  # handshake headers seen, lower-case names
        self.streamed = 0  # bytes /stream has sent so far
        self.stream_done = threading.Event()
        self.closed = threading.Event()  # a handler saw its connection end
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _process_request(self, connection: ServerConnection, request: Any) -> Any:
        self.requests.append({k.lower(): v for k, v in request.headers.raw_items()})
        if request.path == "/refuse":
            return connection.respond(HTTPStatus.FORBIDDEN, "refused by backend\n")
        if request.path == "/plain":
            return connection.respond(HTTPStatus.OK, "no upgrade here\n")
        return None

    def _handler(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        try:
            if path == "/stream":
                chunk = b"s" * STREAM_CHUNK
                for _ in range(STREAM_MESSAGES):
                    ws.send(chunk)
                    self.streamed += STREAM_CHUNK
                self.stream_done.set()
                ws.recv()  # until the client closes
            elif path == "/bye":
                ws.close(1000, "bye")
            else:
                for message in ws:
                    ws.send(message)
        except Exception:  # the peer went away: the test looks at what it received
            pass
        finally:
            self.closed.set()

    def start(self) -> Self:
        self._server = serve(
            self._handler,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            max_size=None,
            compression=None,
        )
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(5)


class RawWsBackend(StartStop):
    """One connection at a time: 101 + a text frame ``early`` in one write, then echo."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.port = self._sock.getsockname()[1]
        self.received = bytearray()  # everything after the handshake head
        self.saw_eof = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            try:
                head, rest = recv_head(conn)
            except EOFError:
                return
            key = next(
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + accept_key(key)
                + b"\r\n\r\n"
                + frame(0x1, b"early", mask=False)
            )
            self.received += rest
            if rest:
                conn.sendall(rest)
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                self.received += chunk
                conn.sendall(chunk)
            self.saw_eof.set()
            conn.sendall(b"after-eof")


def frame(opcode: int, payload: bytes, *, mask: bool = True) -> bytes:
    """One final frame (RFC 6455 §5.2); clients must mask (§5.3), servers must not."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, (0x80 if mask else 0) | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, (0x80 if mask else 0) | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, (0x80 if mask else 0) | 127, size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


class Reader:
    """Reads exact sizes from a socket, starting with bytes already received."""

    def __init__(self, sock: socket.socket, buffered: bytes = b"") -> None:
        self.sock = sock
        self.buffer = bytearray(buffered)

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(max(65536, size - len(self.buffer)))
            if not chunk:
                raise EOFError(f"closed after {len(self.buffer)} of {size} bytes")
            self.buffer += chunk
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of one unmasked frame from the server."""
        first, second = self.exactly(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self.exactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self.exactly(8))
        return first & 0x0F, self.exactly(size)

    def rest(self) -> bytes:
        """Everything until the peer closes."""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                data = bytes(self.buffer)
                self.buffer.clear()
                return data
            self.buffer += chunk


def handshake(path: str, *, host: str = "ws.test", extra: str = "") -> tuple[bytes, bytes]:
    """(request bytes, the Sec-WebSocket-Accept value the answer must carry)."""
    key = base64.b64encode(os.urandom(16))
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()
    return request, accept_key(key)


def read_head(sock: socket.socket) -> tuple[bytes, Reader]:
    """The response head, and a reader holding the bytes read after it."""
    head, rest = recv_head(sock)
    return head, Reader(sock, rest)
