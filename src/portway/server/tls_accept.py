"""Accepting HTTPS connections: the socket is accepted here and the handshake awaited per
connection with ``loop.connect_accepted_socket(ssl=...)``.

Why not ``create_server(ssl=...)``: that hides why a handshake failed (asyncio and uvloop log it
at debug level at most), fixes the SSL context for the server's life (so session ticket keys
could never rotate), and offers no way to count. Why not ``start_tls`` on an accepted plain
connection: uvloop starts reading after ``connection_made`` whatever the protocol asked, so the
ClientHello can reach the plain protocol before TLS takes over.

Each connection costs one task for its handshake; the requests that follow use the same
callbacks-only ``ClientConnection`` as plain HTTP (which reads the TLS session in
``connection_made``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

from portway.observability.stats import WorkerStats
from portway.server.listeners import Listener, handshake_failure

log = logging.getLogger("portway.tls")

ACCEPT_BATCH = 64  # connections accepted per readiness event, so one listener cannot starve others
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_RETRY_ACCEPT = 0.1  # seconds to stop accepting after running out of file descriptors


class TlsAcceptor:
    """Accepts on one listening socket and shakes hands with each client, concurrently."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        listener: Listener,
        stats: WorkerStats,
        make_protocol: Callable[[], asyncio.Protocol],
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.listener = listener
        self.stats = stats
        self.make_protocol = make_protocol
        self.handshakes: set[asyncio.Task[None]] = set()
        self.closed = False
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    log.error("listener %s: cannot accept: %s", self.listener.name, exc)
                    self.loop.remove_reader(self.sock.fileno())
                    self.loop.call_later(_RETRY_ACCEPT, self._resume)
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = self.loop.create_task(self._handshake(conn))
            self.handshakes.add(task)
            task.add_done_callback(self.handshakes.discard)

    def _resume(self) -> None:
        if not self.closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    async def _handshake(self, conn: socket.socket) -> None:
        listener = self.listener
        store = listener.store
        assert store is not None
        try:
            await self.loop.connect_accepted_socket(
                self.make_protocol,
                conn,
                ssl=store.base,
                ssl_handshake_timeout=store.policy.handshake_timeout,
            )
        except asyncio.CancelledError:
            conn.close()
            raise
        except Exception as exc:  # any failure is this client's alone
            self.stats.handshake(listener.name, handshake_failure(exc))
            conn.close()
            return
        self.stats.handshake(listener.name, "ok")

    def close(self) -> None:
        """Stop accepting; handshakes in progress are abandoned (a drain)."""
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for task in list(self.handshakes):
            task.cancel()

    async def wait_closed(self) -> None:
        if self.handshakes:
            await asyncio.gather(*self.handshakes, return_exceptions=True)
