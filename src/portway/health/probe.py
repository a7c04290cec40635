"""One health check of one instance, on a fresh connection, bounded as a whole by the timeout.

A check never reuses a pooled connection: it must find out whether the instance accepts new ones.
The HTTP check sends ``Connection: close`` and stops reading as soon as it knows the answer (at the
end of the head when no body text is expected), so a check costs one short connection.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httptools

from portway.config.resilience import HealthCheckConfig
from portway.config.types import format_host_port
from portway.tls.contexts import UpstreamTls

BODY_LIMIT = 64 * 1024  # body_contains looks at this much of the body, no more
_READ_SIZE = 16 * 1024
# Characters a configured path keeps as written; anything else (spaces, non-ASCII) is
# percent-encoded so that the request line stays valid.
_PATH_SAFE = "!#$%&'()*+,/:;=?@[]~"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    detail: str  # why it failed, or what it saw ("status 200", "connected")


async def probe(
    host: str, port: int, check: HealthCheckConfig, tls: UpstreamTls | None = None
) -> ProbeResult:
    """Check the instance ``host:port`` once as ``check`` says, over TLS when the service speaks
    it (a tcp check then includes the handshake); never raises for the instance's faults."""
    try:
        async with asyncio.timeout(check.timeout):
            if check.type == "tcp":
                return await _tcp(host, port, tls)
            return await _http(host, port, check, tls)
    except TimeoutError:
        return ProbeResult(False, f"timeout after {check.timeout:g}s")


def format_ranges(ranges: tuple[tuple[int, int], ...]) -> str:
    """((200, 399), (404, 404)) -> ``"200-399, 404"``."""
    return ", ".join(str(low) if low == high else f"{low}-{high}" for low, high in ranges)


def _connect_failure(exc: OSError) -> ProbeResult:
    if isinstance(exc, ConnectionRefusedError):
        return ProbeResult(False, "connection refused")
    if isinstance(exc, ConnectionResetError):
        return ProbeResult(False, "connection reset")
    if isinstance(exc, ssl.SSLError):
        return ProbeResult(False, f"TLS handshake failed: {exc.reason or exc}")
    return ProbeResult(False, f"connection failed: {exc.strerror or exc}")


def _open(
    host: str, port: int, tls: UpstreamTls | None
) -> Coroutine[Any, Any, tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    if tls is None:
        return asyncio.open_connection(host, port)
    return asyncio.open_connection(
        host, port, ssl=tls.context, server_hostname=tls.server_hostname(host)
    )


async def _tcp(host: str, port: int, tls: UpstreamTls | None) -> ProbeResult:
    try:
        _reader, writer = await _open(host, port, tls)
    except OSError as exc:
        return _connect_failure(exc)
    writer.close()
    return ProbeResult(True, "connected")


class _Check:
    """One HTTP check in progress; its methods are the httptools callbacks."""

    def __init__(self, check: HealthCheckConfig) -> None:
        self.head_only = check.method == "HEAD"
        self.needle = check.body_contains.encode("utf-8") if check.body_contains else None
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.body_seen = bytearray()
        self.done = False

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            return  # an interim answer (100 Continue): the real one follows
        self.status = status
        # Without body text to look for, the status is the whole answer; a HEAD answer has no body.
        if self.needle is None or self.head_only:
            self.done = True

    def on_body(self, data: bytes) -> None:
        if self.status == 0 or self.needle is None:
            return
        room = BODY_LIMIT - len(self.body_seen)
        self.body_seen += data[:room]
        if len(self.body_seen) >= BODY_LIMIT or self.needle in self.body_seen:
            self.done = True

    def on_message_complete(self) -> None:
        if self.status:
            self.done = True

    def verdict(self, check: HealthCheckConfig) -> ProbeResult:
        ranges = check.status_ranges
        if not any(low <= self.status <= high for low, high in ranges):
            return ProbeResult(False, f"status {self.status} not in {format_ranges(ranges)}")
        if self.needle is not None and self.needle not in self.body_seen:
            return ProbeResult(False, f"body does not contain {check.body_contains!r}")
        return ProbeResult(True, f"status {self.status}")


def _request(host: str, port: int, check: HealthCheckConfig) -> bytes:
    authority = check.host or format_host_port(host, port)
    lines = (
        f"{check.method} {quote(check.path, safe=_PATH_SAFE)} HTTP/1.1\r\n"
        f"Host: {authority}\r\n"
        "Connection: close\r\n"
        "User-Agent: portway-health\r\n"
        "Accept: */*\r\n\r\n"
    )
    return lines.encode("utf-8")


async def _http(
    host: str, port: int, check: HealthCheckConfig, tls: UpstreamTls | None
) -> ProbeResult:
    try:
        reader, writer = await _open(host, port, tls)
    except OSError as exc:
        return _connect_failure(exc)
    state = _Check(check)
    try:
        writer.write(_request(host, port, check))
        while not state.done:
            data = await reader.read(_READ_SIZE)
            if not data:
                break  # a close-delimited body ends here; an unfinished head is judged below
            state.parser.feed_data(data)
    except httptools.HttpParserError as exc:
        return ProbeResult(False, f"bad response: {exc}")
    except OSError as exc:
        return _connect_failure(exc)
    finally:
        writer.close()
    if state.status == 0:
        return ProbeResult(False, "connection closed before a response")
    return state.verdict(check)
