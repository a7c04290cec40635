"""The demo's example service: answers every request with what it received, as pretty JSON.

A newcomer points Portway at a few of these and sees, per request, which service and instance
answered and the headers the gateway added (X-Forwarded-*, Forwarded, X-Request-Id).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import cast

import httptools


class _EchoProtocol(asyncio.Protocol):
    """One client connection. Answers are written as each request completes, so pipelined
    requests are answered in order; the connection stays open unless the client asks otherwise.
    """

    def __init__(self, service: str, instance: str) -> None:
        self._service = service
        self._instance = instance
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(400, {"error": "malformed request"}, keep_alive=False)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_message_complete(self) -> None:
        path, _, query = self._url.partition(b"?")
        answer: dict[str, object] = {
            "service": self._service,
            "instance": self._instance,
            "method": self._parser.get_method().decode("latin-1"),
            "path": path.decode("utf-8", "replace"),
            "query": query.decode("utf-8", "replace"),
            "headers": self._headers,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        self._send(200, answer, keep_alive=self._parser.should_keep_alive())

    def _send(self, status: int, answer: dict[str, object], *, keep_alive: bool) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        body = json.dumps(answer, indent=2).encode() + b"\n"
        lines = [
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Bad Request'}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        if not keep_alive:
            lines.append("Connection: close")
        self._transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        if not keep_alive:
            self._transport.close()


async def start_backend(service: str, instance: str, host: str, port: int) -> asyncio.Server:
    """Start serving on ``host:port`` (0: any free port) and return the listening server."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _EchoProtocol(service, instance), host, port)
