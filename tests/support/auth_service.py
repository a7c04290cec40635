"""A forward-auth service for end-to-end tests: asyncio streams in a background thread, keep-alive.

It judges the request the gateway describes (``X-Forwarded-Uri``, ``Authorization``):

==============================  ==============================================================
URI starts with ``/slow``       waits ``slow_delay`` seconds, then as below
URI starts with ``/login``      302 to ``https://login.example/?rd=<uri>`` with a Set-Cookie
``Authorization: Bearer good``  200 with ``x-user: alice`` and ``x-scopes: read write``
``Authorization: Bearer bad``   403 with a JSON body
anything else                   401 ``WWW-Authenticate: Bearer realm="portway-tests"``, a body
==============================  ==============================================================

Every request head it read is kept (``requests``), with the connection it came on, so a test sees
what the gateway sent and whether it reused a connection.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from typing import Self

from tests.support.lifecycle import StartStop, close_server


class AuthService(StartStop):
    def __init__(self, slow_delay: float = 3.0, ssl: ssl.SSLContext | None = None) -> None:
        """``ssl``: serve HTTPS with this server context."""
        self.slow_delay = slow_delay
        self.ssl = ssl
        self.port = 0
        self.requests: list[tuple[int, dict[str, str]]] = []  # (connection number, headers)
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="auth-service", daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://127.0.0.1:{self.port}/check"

    def start(self) -> Self:
        self._thread.start()
        self._ready.wait(5.0)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5.0)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            self.connections += 1
            number = self.connections
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")[1:]
                    headers = {
                        k.strip().lower(): v.strip()
                        for k, _, v in (line.partition(":") for line in lines if line)
                    }
                    self.requests.append((number, headers))
                    writer.write(await self._answer(headers))
                    await writer.drain()
            except (
                asyncio.IncompleteReadError,
                ConnectionError,
                ssl.SSLError,
                asyncio.CancelledError,
            ):
                pass
            finally:
                writer.close()
                tasks.discard(task)

        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=self.ssl)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        await close_server(server)
        for task in list(tasks):
            task.cancel()
        await asyncio.sleep(0.01)

    async def _answer(self, headers: dict[str, str]) -> bytes:
        uri = headers.get("x-forwarded-uri", "")
        if uri.startswith("/slow"):
            await asyncio.sleep(self.slow_delay)
        if uri.startswith("/login"):
            return _response(
                302,
                [
                    ("Location", f"https://login.example/?rd={uri}"),
                    ("Set-Cookie", "csrf=1; Path=/"),
                ],
                b"",
            )
        authorization = headers.get("authorization", "")
        if authorization == "Bearer good":
            return _response(200, [("X-User", "alice"), ("X-Scopes", "read write")], b"")
        if authorization == "Bearer bad":
            return _response(403, [("Content-Type", "application/json")], b'{"error":"forbidden"}')
        return _response(
            401,
            [("WWW-Authenticate", 'Bearer realm="portway-tests"'), ("Content-Type", "text/plain")],
            b"log in first\n",
        )


def _response(status: int, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status} X"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
