"""Idle connections to one upstream instance, per worker.

LIFO reuse (the most recently used connection is the least likely to have been closed by the
upstream's own idle timeout), a cap on idle connections like nginx's ``keepalive``, and an idle
timeout enforced by the worker's sweeper. A retired pool (its service was replaced by a new config)
closes connections as they come back instead of keeping them.
"""

from __future__ import annotations

import asyncio

from portway.deadlines import Sweeper
from portway.tls.contexts import UpstreamTls
from portway.upstream.connection import UpstreamConnection, trait


@trait
class PoolOwner:
    """Told when a connection closes or comes back to the pool (the service's counters: it counts a
    connection as open from the moment it starts connecting, which only it knows). A trait, like
    ``ResponseSink``: compiled, the pool calls its owner natively once per request."""

    __slots__ = ()

    def connection_closed(self) -> None:
        raise NotImplementedError

    def connection_released(self) -> None:
        raise NotImplementedError


class _NoOwner(PoolOwner):
    __slots__ = ()

    def connection_closed(self) -> None:
        pass

    def connection_released(self) -> None:
        pass


class Pool:
    __slots__ = (
        "connections_opened",
        "host",
        "idle",
        "idle_timeout",
        "loop",
        "max_idle",
        "owner",
        "port",
        "retired",
        "server_hostname",
        "sweeper",
        "tls",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sweeper: Sweeper,
        host: str,
        port: int,
        max_idle: int,
        idle_timeout: float,
        owner: PoolOwner | None = None,
        tls: UpstreamTls | None = None,
    ) -> None:
        self.loop = loop
        self.sweeper = sweeper
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.idle: list[UpstreamConnection] = []
        self.retired = False
        self.connections_opened = 0
        self.owner: PoolOwner = owner if owner is not None else _NoOwner()
        self.tls = tls
        self.server_hostname = tls.server_hostname(host) if tls is not None else None

    def acquire(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            connection = idle.pop()
            if not connection.closed:
                connection.reused = True
                return connection
        return None

    def release(self, connection: UpstreamConnection) -> None:
        connection.exchange = None
        if connection.closed:
            return
        if self.retired or len(self.idle) >= self.max_idle:
            connection.close()
            return
        # An idle connection must read, or it would never notice the upstream closing it.
        if connection.reading_paused:
            connection.resume_reading()
        connection.deadline = self.sweeper.now + self.idle_timeout
        self.idle.append(connection)
        self.owner.connection_released()

    def forget(self, connection: UpstreamConnection) -> None:
        """A connection closed; drop it from the idle list if it was there."""
        if connection.exchange is None and connection in self.idle:
            self.idle.remove(connection)
        self.owner.connection_closed()

    async def connect(self, timeout: float) -> UpstreamConnection:
        """A new connection; raises OSError (refused, unreachable, a failed TLS handshake: an
        ``ssl.SSLError``) or TimeoutError."""
        tls = self.tls
        async with asyncio.timeout(timeout):
            if tls is None:
                _, connection = await self.loop.create_connection(
                    lambda: UpstreamConnection(self), self.host, self.port
                )
            else:
                _, connection = await self.loop.create_connection(
                    lambda: UpstreamConnection(self),
                    self.host,
                    self.port,
                    ssl=tls.context,
                    server_hostname=self.server_hostname,
                    ssl_handshake_timeout=timeout,
                )
        self.connections_opened += 1
        return connection

    def retire(self) -> None:
        self.retired = True
        idle, self.idle = self.idle, []
        for connection in idle:
            connection.close()
