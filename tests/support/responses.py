"""Reading HTTP/1.1 responses with ``h11``, an independent parser, for exact-byte tests.

A response the gateway frames wrongly fails here rather than being smoothed over.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import h11

# h11 refuses heads larger than this; the gateway's own limits are tested well below it.
MAX_HEAD_BYTES = 1 << 20


@dataclass
class Response:
    """One parsed response. Header names are lower-case; values are latin-1 decoded."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    http_version: str = "1.1"
    informational: list[Response] = field(default_factory=list)  # 1xx responses before this one

    def header(self, name: str) -> str | None:
        """Header ``name`` (any case), repeated fields joined with ``", "``; None when absent."""
        values = self.header_values(name)
        return ", ".join(values) if values else None

    def header_values(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key == wanted]

    def trailer(self, name: str) -> str | None:
        wanted = name.lower()
        values = [value for key, value in self.trailers if key == wanted]
        return ", ".join(values) if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def decode_headers(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in headers]


def head_response(event: h11.Response | h11.InformationalResponse) -> Response:
    return Response(
        status=event.status_code,
        reason=event.reason.decode("latin-1"),
        headers=decode_headers(event.headers),
        http_version=event.http_version.decode("ascii"),
    )


class ResponseReader:
    """Reads responses one at a time from a byte source with h11, keeping pipelined leftovers.

    h11 only parses a response after a request was sent, so a stand-in request with the real
    method is fed to its state machine for each response: HEAD answers then have no body.
    """

    def __init__(self, receive: Callable[[], bytes]) -> None:
        self._receive = receive
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._awaiting_final = False
        self.closed_by_server = False

    def read(self, method: str = "GET", *, interim: bool = False) -> Response:
        """The next final response (or, with ``interim``, the next 1xx one)."""
        conn = self._conn
        if not self._awaiting_final:
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
            if conn.our_state is not h11.IDLE:
                raise ConnectionError("the server closed the connection after the last response")
            conn.send(h11.Request(method=method, target="/", headers=[("Host", "stand-in")]))
            conn.send(h11.EndOfMessage())
            self._awaiting_final = True
        informational: list[Response] = []
        response: Response | None = None
        body = bytearray()
        while True:
            try:
                event = self._next_event()
            except h11.RemoteProtocolError as exc:
                if self.closed_by_server and response is None:
                    # h11 reports a close before any response as a protocol error.
                    raise ConnectionError(
                        "the server closed the connection without a response"
                    ) from exc
                raise
            if isinstance(event, h11.InformationalResponse):
                if interim:
                    return head_response(event)
                informational.append(head_response(event))
            elif isinstance(event, h11.Response):
                response = head_response(event)
                response.informational = informational
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                response.body = bytes(body)
                response.trailers = decode_headers(event.headers)
                self._awaiting_final = False
                return response
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection without a response")

    def has_unread_data(self) -> bool:
        data, _ = self._conn.trailing_data
        return bool(data)

    def wait_for_close(self) -> bool:
        """True when the source ends before sending anything more; False when data arrives."""
        if self.closed_by_server:
            return True
        if self.has_unread_data():
            return False
        data = self._receive()
        self._conn.receive_data(data)
        self.closed_by_server = not data
        return self.closed_by_server

    def _next_event(self) -> object:
        while True:
            event = self._conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if self.closed_by_server:
                raise ConnectionError(
                    "the server closed the connection in the middle of a response"
                )
            data = self._receive()
            self.closed_by_server = not data
            self._conn.receive_data(data)


def parse_responses(data: bytes, request_methods: list[str] | None = None) -> list[Response]:
    """Every response in ``data`` (a whole stream, as read until close), in order.

    ``request_methods`` names the request each response answers ("HEAD" responses have no
    body); default: all GET. Bytes after a response that closed the connection, or a response
    cut short, raise ``ValueError``.
    """
    chunks = [data]
    reader = ResponseReader(lambda: chunks.pop() if chunks else b"")
    responses: list[Response] = []
    while True:
        if not reader.has_unread_data() and reader.wait_for_close():
            return responses
        methods = request_methods or []
        method = methods[len(responses)] if len(responses) < len(methods) else "GET"
        try:
            responses.append(reader.read(method))
        except (h11.ProtocolError, ConnectionError) as exc:
            raise ValueError(
                f"cannot parse response {len(responses) + 1} ({exc}); "
                f"{len(responses)} parsed before it, from {data[:2000]!r}"
            ) from exc


def parse_head(head: bytes, method: str) -> Response:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "stand-in")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(head)
    event = conn.next_event()
    if not isinstance(event, h11.Response | h11.InformationalResponse):
        raise ValueError(f"not a response head: {head!r}")
    return head_response(event)


def body_framing(response: Response, method: str) -> str:
    """How the body ends (RFC 9112 §6.3): "none", "chunked", "close" or a Content-Length."""
    if method == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200:
        return "none"
    if (response.header("transfer-encoding") or "").lower().endswith("chunked"):
        return "chunked"
    length = response.header("content-length")
    if length is not None:
        return length.strip()
    return "close"
