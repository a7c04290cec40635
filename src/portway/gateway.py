"""One worker's gateway: listeners, the live snapshot, reload and drain.

The composition root of a worker process. It turns a validated ``Config`` into a snapshot, serves it
on the configured listeners, swaps in a new snapshot on reload, and drains on shutdown: stop
accepting, close idle keep-alive connections, let in-flight exchanges finish up to a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from portway.config.model import Config
from portway.config.types import parse_host_port
from portway.dataplane import Snapshot, assemble, retire_replaced
from portway.deadlines import Sweeper, sweep_interval
from portway.health.worker import HealthSource, WorkerHealth
from portway.server.context import WorkerContext
from portway.server.http1 import ClientConnection

log = logging.getLogger("portway.gateway")


def bind_listener(address: str, *, reuse_port: bool) -> socket.socket:
    """A bound, listening TCP socket for ``host:port``; SO_REUSEPORT lets workers share the port."""
    host, port = parse_host_port(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(4096)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Gateway:
    """Serves one config on its listeners inside one event loop (one worker)."""

    def __init__(
        self, config: Config, loop: asyncio.AbstractEventLoop, health: HealthSource = "local"
    ) -> None:
        """``health``: ``"local"`` runs the health checks in this process, a ``Board`` follows the
        supervisor's prober (workers of ``portway run``), ``"off"`` runs none."""
        self.loop = loop
        self.config = config
        self.sweeper = Sweeper(loop)
        snapshot = assemble(config, None, loop, self.sweeper)
        self.ctx = WorkerContext(loop, config.server, snapshot, self.sweeper)
        self.sweeper.interval = sweep_interval(self.ctx.smallest_timeout)
        self.sweeper.hooks.append(self._refresh_services)
        self.servers: list[asyncio.Server] = []
        self.addresses: list[tuple[str, int]] = []
        self.health = WorkerHealth(health, config, loop, lambda: self.ctx.snapshot.services)

    def _refresh_services(self, now: float) -> None:
        for service in self.ctx.snapshot.services.values():
            service.refresh()
        if self.ctx.access_log is not None:
            self.ctx.access_log.flush()

    @property
    def snapshot(self) -> Snapshot:
        return self.ctx.snapshot

    async def start(self, sockets: list[socket.socket] | None = None) -> list[tuple[str, int]]:
        """Listen on ``sockets`` (one per listener, e.g. SO_REUSEPORT ones) or bind the listeners."""
        if sockets is None:
            sockets = [bind_listener(lc.address, reuse_port=False) for lc in self.config.listeners]
        ctx = self.ctx
        for sock in sockets:
            host, port = sock.getsockname()[:2]

            def factory(port: int = port) -> ClientConnection:
                return ClientConnection(ctx, port)

            server = await self.loop.create_server(factory, sock=sock, backlog=4096)
            self.servers.append(server)
            self.addresses.append((host, port))
        self.sweeper.start()
        self.health.start()
        return self.addresses

    def reload(self, config: Config) -> Snapshot:
        """Swap in ``config``'s routes and services; listeners and server settings need a restart."""
        if config.listeners != self.config.listeners or config.server != self.config.server:
            log.warning("listeners and server settings changed: they take effect on restart only")
        previous = self.ctx.snapshot
        snapshot = assemble(config, previous, self.loop, self.sweeper)
        self.ctx.snapshot = snapshot
        retire_replaced(previous, snapshot)
        self.health.reload(config)
        self.sweeper.interval = sweep_interval(self.ctx.smallest_timeout)
        log.info("config generation %d is live", snapshot.generation)
        return snapshot

    async def drain(self, timeout: float) -> bool:
        """Stop accepting, finish in-flight requests for up to ``timeout`` s; True if all finished."""
        ctx = self.ctx
        ctx.draining = True
        for server in self.servers:
            server.close()
        await self.health.close()
        for connection in list(ctx.connections):
            if isinstance(connection, ClientConnection) and connection.idle:
                connection.close()
        deadline = self.loop.time() + timeout
        while ctx.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        finished = not ctx.connections
        for connection in list(ctx.connections):
            if isinstance(connection, ClientConnection):
                connection.close()
        for service in ctx.snapshot.services.values():
            service.retire()
        self.sweeper.stop()
        if ctx.access_log is not None:
            ctx.access_log.close()
        for server in self.servers:
            await server.wait_closed()
        return finished


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed, else the stock loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop
