"""A small HTTP/1.1 client for the one auth service of a ``forward_auth`` policy, on the loop.

Why not the upstream pools: those belong to services (balancing, health, outlier detection, retry
budgets) and bind an ``Exchange``; an auth check is one GET to one URL whose answer the policy
reads whole. Why not the health probe: it opens a connection per check on purpose, while an auth
service is asked once per request and must not cost a TCP (and TLS) handshake each time. So: idle
keep-alive connections in a LIFO list (at most ``MAX_IDLE``), httptools to parse the answer (as
``health.probe`` and the upstream connections do), and one replay on a fresh connection when a
reused one turns out closed before any answer byte (the GET is safe to repeat).

No timeout here: the chain bounds the wait (``Policy.timeout``) and cancels the check, which closes
the connection it was using (an answer read half is never reused).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import httptools

from portway.config.tls import UpstreamTlsConfig
from portway.tls.contexts import upstream_context

MAX_IDLE: Final = 16  # idle connections kept per auth service and worker
BODY_LIMIT: Final = 8 * 1024  # what a refusal's body may carry to the client; the rest is read away
_READ_SIZE: Final = 16 * 1024


@dataclass(slots=True)
class AuthResponse:
    status: int
    headers: list[tuple[bytes, bytes]]  # names lower-case
    body: bytes  # at most BODY_LIMIT bytes

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class _Parse:
    """One answer being read; its methods are the httptools callbacks."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.done = False
        self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()  # read here: reset once the message ends

    def on_body(self, data: bytes) -> None:
        room = BODY_LIMIT - len(self.body)
        if room > 0:
            self.body += data[:room]

    def on_message_complete(self) -> None:
        if self.status >= 200:
            self.done = True
        else:  # an interim answer: the real one follows
            self.status = 0
            self.headers = []


class _Stale(Exception):
    """A reused connection was closed by the server before answering."""


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class AuthClient:
    """GET requests to one URL over kept-alive connections."""

    def __init__(self, url: str, tls: UpstreamTlsConfig | None = None) -> None:
        """``tls``: for an https URL, the CA, client certificate and name to verify (none: the
        system CAs and the URL's host)."""
        parts = urlsplit(url)
        https = parts.scheme == "https"
        assert parts.hostname is not None  # the config model checked the URL
        self.host = parts.hostname
        self.port = parts.port or (443 if https else 80)
        self.ssl: ssl.SSLContext | None = None
        self.server_name = self.host
        if https:
            self.ssl = upstream_context(tls) if tls is not None else ssl.create_default_context()
            if tls is not None and tls.server_name is not None:
                self.server_name = tls.server_name
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        authority = parts.netloc.encode("ascii")
        self.head = b"GET %s HTTP/1.1\r\nhost: %s\r\n" % (target.encode("ascii"), authority)
        self.idle: list[Connection] = []

    async def get(self, headers: list[tuple[bytes, bytes]]) -> AuthResponse:
        """The answer to a GET with ``headers`` (besides Host); raises OSError when the service
        cannot be reached and ValueError when its answer is not HTTP."""
        lines = [self.head, *(b"%s: %s\r\n" % pair for pair in headers), b"\r\n"]
        request = b"".join(lines)
        while True:
            reused = self._idle()
            connection = reused or await self._open()
            try:
                return await self._exchange(connection, request, reused is not None)
            except _Stale:
                continue  # the next round takes another idle connection, or opens one

    def close(self) -> None:
        idle, self.idle = self.idle, []
        for _reader, writer in idle:
            writer.close()

    def _idle(self) -> Connection | None:
        while self.idle:
            reader, writer = self.idle.pop()
            if not writer.is_closing() and not reader.at_eof():
                return reader, writer
            writer.close()
        return None

    async def _open(self) -> Connection:
        if self.ssl is None:
            return await asyncio.open_connection(self.host, self.port)
        return await asyncio.open_connection(
            self.host, self.port, ssl=self.ssl, server_hostname=self.server_name
        )

    async def _exchange(self, connection: Connection, request: bytes, reused: bool) -> AuthResponse:
        reader, writer = connection
        keep = False
        try:
            writer.write(request)
            answer = _Parse()
            received = 0
            while not answer.done:
                data = await reader.read(_READ_SIZE)
                if not data:
                    if reused and received == 0:
                        raise _Stale
                    if answer.status:
                        break  # read until close: the close ends the body
                    raise ConnectionResetError("the auth service closed the connection")
                received += len(data)
                try:
                    answer.parser.feed_data(data)
                except httptools.HttpParserError as exc:
                    raise ValueError(f"not an HTTP answer: {exc}") from None
            keep = answer.done and answer.keep_alive and len(self.idle) < MAX_IDLE
            return AuthResponse(answer.status, answer.headers, bytes(answer.body))
        finally:
            if keep:
                self.idle.append(connection)
            else:
                writer.close()
