"""One worker's gateway: listeners, the live snapshot, reload and drain.

The composition root of a worker process. It turns a validated ``Config`` into a snapshot, serves it
on the configured listeners, swaps in a new snapshot on reload, and drains on shutdown: stop
accepting, close idle keep-alive connections, let in-flight exchanges finish up to a deadline.

Its statistics go to the admin API one of two ways: a worker of ``portway run`` publishes a report
to its slot of the supervisor's ``StatsBoard`` about once a second (and at once after a reload or a
drain); a gateway alone in its process (tests, the demo) can serve the admin API itself from a
thread (``admin=True``), reading its report on its own loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from portway.admin.report import config_fingerprint, worker_report
from portway.admin.server import AdminServer, bind_admin
from portway.admin.sources import AdminState, LocalSource
from portway.balancing import Endpoint
from portway.config.model import Config
from portway.config.types import parse_host_port
from portway.dataplane import Snapshot, assemble, retire_replaced
from portway.deadlines import Sweeper, sweep_interval
from portway.errors import ConfigError, ConfigIssue
from portway.health.worker import HealthSource, WorkerHealth
from portway.observability.stats import WorkerStats
from portway.observability.stats_board import StatsBoard
from portway.pki import MaterialError
from portway.server.context import WorkerContext
from portway.server.http1 import ClientConnection
from portway.server.listeners import Listener
from portway.server.passthrough import PassthroughConnection
from portway.server.tls_accept import TlsAcceptor

log = logging.getLogger("portway.gateway")

PUBLISH_INTERVAL = 1.0  # seconds between statistics reports to the stats board


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
        self,
        config: Config,
        loop: asyncio.AbstractEventLoop,
        health: HealthSource = "local",
        *,
        stats: tuple[StatsBoard, int] | None = None,
        admin: bool = False,
    ) -> None:
        """``health``: ``"local"`` runs the health checks in this process, a ``Board`` follows the
        supervisor's prober (workers of ``portway run``), ``"off"`` runs none. ``stats``: the stats
        board and slot this worker publishes to. ``admin``: serve the admin API on
        ``config.admin.address`` from a thread of this process."""
        self.loop = loop
        self.config = config
        self.sweeper = Sweeper(loop)
        snapshot = assemble(config, None, loop, self.sweeper)
        self.ctx = WorkerContext(loop, config.server, snapshot, self.sweeper)
        self._count_ejections(snapshot)
        self.sweeper.interval = sweep_interval(self.ctx.smallest_timeout)
        self.sweeper.hooks.append(self._refresh_services)
        self.servers: list[asyncio.Server] = []
        self.listeners: list[Listener] = self.ctx.listeners
        self.acceptors: list[TlsAcceptor] = []
        self.sweeper.hooks.append(self._tick_listeners)
        self.addresses: list[tuple[str, int]] = []
        self.health = WorkerHealth(health, config, loop, lambda: self.ctx.snapshot.services)
        self.fingerprint = config_fingerprint(config)
        self.stats_board = stats
        self._published = 0.0
        if stats is not None:
            self.sweeper.hooks.append(self._publish_due)
        self.admin: AdminServer | None = None
        self.admin_address: tuple[str, int] | None = None
        self._serve_admin = admin and config.admin.address is not None

    def _count_ejections(self, snapshot: Snapshot) -> None:
        """Have the outlier detector of each new service count its ejections in this worker's
        statistics (a service kept from the previous snapshot already does)."""
        for name, service in snapshot.services.items():
            if service.outlier.on_eject is None:
                service.outlier.on_eject = _ejection_counter(self.ctx.stats, name)

    def _refresh_services(self, now: float) -> None:
        for service in self.ctx.snapshot.services.values():
            service.refresh()
        if self.ctx.access_log is not None:
            self.ctx.access_log.flush()
        if self.ctx.tracing is not None:
            self.ctx.tracing.flush()

    def report(self) -> dict[str, Any]:
        """This worker's statistics report; on the loop's thread only."""
        return worker_report(self.ctx, self.fingerprint)

    def publish(self) -> None:
        if self.stats_board is not None:
            board, slot = self.stats_board
            board.publish(slot, self.report())
            self._published = self.loop.time()

    def _publish_due(self, now: float) -> None:
        if now - self._published >= PUBLISH_INTERVAL:
            self.publish()

    def _start_admin(self, sock: socket.socket) -> None:
        source = LocalSource(
            self.loop,
            lambda: self.ctx.snapshot.config,
            self.report,
            lambda: bool(self.servers or self.acceptors) and not self.ctx.draining,
        )
        self.admin = AdminServer(AdminState(source), sock)
        self.admin.start()
        self.admin_address = sock.getsockname()[:2]

    async def _serve(self, listener: Listener, sock: socket.socket) -> None:
        """Accept on ``sock`` with the protocol of ``listener``'s kind."""
        ctx = self.ctx
        passthrough = listener.config.passthrough
        factory: Callable[[], asyncio.Protocol]
        if passthrough is not None:
            hello = passthrough.client_hello_timeout

            def factory() -> asyncio.Protocol:
                return PassthroughConnection(
                    ctx, listener.sni_routes, client_hello_timeout=hello, listener=listener.name
                )
        else:

            def factory() -> asyncio.Protocol:
                return ClientConnection(ctx, listener)

            if listener.store is not None:
                self.acceptors.append(TlsAcceptor(self.loop, sock, listener, ctx.stats, factory))
                return
        self.servers.append(await self.loop.create_server(factory, sock=sock, backlog=4096))

    def _tick_listeners(self, now: float) -> None:
        for listener in self.listeners:
            if listener.store is not None:
                listener.store.tick(now, self.loop)

    def certificates(self) -> list[dict[str, object]]:
        """Every certificate this worker serves, with its expiry; for the admin API."""
        return [c for lr in self.listeners if lr.store is not None for c in lr.store.describe()]

    @property
    def snapshot(self) -> Snapshot:
        return self.ctx.snapshot

    async def start(self, sockets: list[socket.socket] | None = None) -> list[tuple[str, int]]:
        """Listen on ``sockets`` (one per listener, e.g. SO_REUSEPORT ones) or bind the listeners."""
        # Bound first: an admin address in use fails the start before any listener serves.
        admin_address = self.config.admin.address if self._serve_admin else None
        admin_socket = None
        if admin_address is not None:
            try:
                admin_socket = bind_admin(admin_address)
            except OSError as exc:  # say which address: a listener's error does not name one
                raise OSError(exc.errno, exc.strerror, f"admin {admin_address}") from exc
        if sockets is None:
            try:
                sockets = [
                    bind_listener(lc.address, reuse_port=False) for lc in self.config.listeners
                ]
            except OSError:
                if admin_socket is not None:
                    admin_socket.close()
                raise
        ctx = self.ctx
        try:
            for index, sock in enumerate(sockets):
                host, port = sock.getsockname()[:2]
                listener = Listener(self.config, index, port, self.ctx.stats)
                self.listeners.append(listener)
                self.addresses.append((host, port))

                listener.use_services(ctx.snapshot.services)
                await self._serve(listener, sock)
        except MaterialError as exc:  # a certificate file changed since the config was checked
            for sock in sockets:
                sock.close()
            if admin_socket is not None:
                admin_socket.close()
            raise ConfigError([ConfigIssue("<listeners>", "", str(exc))]) from None
        self.sweeper.interval = sweep_interval(ctx.smallest_timeout)  # with the listeners' own
        self.sweeper.start()
        self.health.start()
        self.publish()  # the admin API's readiness waits for a first report
        if admin_socket is not None:
            self._start_admin(admin_socket)
        return self.addresses

    def reload(self, config: Config) -> Snapshot:
        """Swap in ``config``'s routes and services; listeners and server settings need a restart."""
        if [lc.address for lc in config.listeners] != [
            lc.address for lc in self.config.listeners
        ] or config.server != self.config.server:
            log.warning(
                "listener addresses and server settings changed: they take effect on restart only"
            )
        same_addresses = [lc.address for lc in config.listeners] == [
            lc.address for lc in self.config.listeners
        ]
        if same_addresses:
            try:
                for listener in self.listeners:
                    listener.reconfigure(config)
            except MaterialError as exc:
                raise ConfigError([ConfigIssue("<listeners>", "", str(exc))]) from None
        previous = self.ctx.snapshot
        snapshot = assemble(config, previous, self.loop, self.sweeper)
        self._count_ejections(snapshot)
        self.ctx.snapshot = snapshot
        for listener in self.listeners:
            listener.use_services(snapshot.services)
        self.fingerprint = config_fingerprint(config)
        retire_replaced(previous, snapshot)
        self.health.reload(config)
        self.sweeper.interval = sweep_interval(self.ctx.smallest_timeout)
        self.ctx.stats.reloaded(True)
        self.publish()
        log.info("config generation %d is live", snapshot.generation)
        return snapshot

    async def drain(self, timeout: float) -> bool:
        """Stop accepting, finish in-flight requests for up to ``timeout`` s; True if all finished."""
        ctx = self.ctx
        ctx.draining = True
        await close_servers(self.servers)
        for acceptor in self.acceptors:
            acceptor.close()
        await self.health.close()
        for connection in list(ctx.connections):
            if isinstance(connection, ClientConnection | PassthroughConnection) and connection.idle:
                connection.close()
        deadline = self.loop.time() + timeout
        while ctx.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        finished = not ctx.connections
        for connection in list(ctx.connections):
            if isinstance(connection, ClientConnection | PassthroughConnection):
                connection.close()
        services = list(ctx.snapshot.services.values())
        for service in services:
            service.retire()
        ctx.snapshot.policies.close()
        # A TLS upstream connection closes with a close_notify exchange that needs the loop for a
        # few more turns; stopping the loop under it would leave its transport half closed.
        closing_deadline = self.loop.time() + 1.0
        while (
            any(service.open_connections for service in services)
            and self.loop.time() < closing_deadline
        ):
            await asyncio.sleep(0.01)
        self.sweeper.stop()
        if ctx.access_log is not None:
            ctx.access_log.close()
        if ctx.tracing is not None:
            ctx.tracing.close()
        for server in self.servers:
            await server.wait_closed()
        for acceptor in self.acceptors:
            await acceptor.wait_closed()
        self.publish()  # the counts of the last requests outlive this process
        if self.admin is not None:
            admin, self.admin = self.admin, None
            await self.loop.run_in_executor(None, admin.stop)
        return finished


def _ejection_counter(stats: WorkerStats, service: str) -> Callable[[Endpoint], None]:
    def ejected(endpoint: Endpoint) -> None:
        stats.instance_ejected(service, endpoint.address)

    return ejected


async def close_servers(servers: list[asyncio.Server]) -> None:
    """Stop accepting without losing a connection accepted a moment before the close.

    The stock loop accepts in a task that makes the transport a loop turn later; a server closed
    in between fails an assertion in ``Server._attach`` (CPython 3.11, swallowed by the loop) and
    the accepted socket is left unanswered until the garbage collector closes it. So stop
    watching the listening sockets, let the accepts under way become connections, then close.
    uvloop has no such gap (its ``remove_reader`` of a listening socket is a no-op).
    """
    loop = asyncio.get_running_loop()
    for server in servers:
        for sock in server.sockets:
            loop.remove_reader(sock.fileno())
    # Three loop turns: an accept callback already queued, each accept task's first step (the
    # transport), each connection_made (so the connection is counted and can be closed).
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    for server in servers:
        server.close()
    await asyncio.sleep(0)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed, else the stock loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop
