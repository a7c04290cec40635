"""WebSocket handshakes and the tunnels they open (RFC 6455 §4, RFC 9110 §7.8).

Theory of operation. A WebSocket handshake (``GET`` with ``Connection: upgrade`` and
``Upgrade: websocket``, checked by ``server.request_head.websocket_upgrade``) is an ordinary
request up to its response: routed, policed (authentication and rate limits judge the handshake),
rewritten, balanced, retried under the usual rules. Only its class differs: ``UpgradeExchange``,
so requests that do not upgrade pay nothing for any of this. The gateway forwards it with
``Connection: upgrade`` and the client's ``Upgrade`` value (``Sec-WebSocket-*`` pass as plain
fields).

1. *Holding.* llhttp stops at the end of an upgrade request's head (``HttpParserUpgrade``): the
   client connection hands the bytes after the head to ``hold_client``, which makes
   ``_ClientSide`` the client transport's protocol. Client bytes are held (the client may send a
   frame right after the handshake), never sent upstream before a 101: an upstream that ignores
   the Upgrade (RFC 9110 §7.8 allows it) would read them as a next request that no route or
   policy had seen. Past 64 KiB held, the client is paused.
2. *Refused.* Any final status but 101 is relayed as a normal response with ``connection: close``;
   the held bytes are dropped and both connections close afterwards (neither can be trusted to be
   at a message boundary). Outcome ``refused``.
3. *Switching.* On a 101 whose ``Upgrade`` is ``websocket``, the upstream parser stops the same
   way (the bytes after the 101 head are kept). The client gets the 101 head (hop-by-hop fields
   dropped, ``connection: upgrade``, ``upgrade``, ``x-request-id``, queued response fields), then
   the upstream's early bytes; the held client bytes go upstream; both transports get protocols
   that feed a ``proxy.relay.Relay`` (the one TLS passthrough uses): every byte each way,
   backpressure both ways, half-close, and the service's ``read_timeout`` as idle timeout through
   this exchange's sweeper deadline. From the 101 on nothing is retried.
4. *Closing.* The tunnel ends when both sides sent their EOF, either side closes or resets, the
   idle timeout passes, or a drain reaches its deadline. The exchange is accounted then: status
   101, the tunnel's bytes in ``bytes_in``/``bytes_out``, its whole lifetime as duration, plus
   ``WorkerStats.tunnel_ended`` with the outcome.

Counters. A tunnel is no longer a request in flight (it leaves the service's ``max_requests`` count
at the 101) but its upstream connection stays open: it counts against ``max_connections`` until it
closes, never returns to a pool (so never against ``max_idle``), and keeps its instance's
``active`` count (least-request balancing sees it).
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from portway.proxy import responses
from portway.proxy.exchange import Exchange
from portway.proxy.exchange_state import PAUSE_PENDING, PAUSE_UPSTREAM
from portway.proxy.relay import Relay
from portway.upstream.connection import UpstreamConnection
from portway.upstream.forward import HOP_BY_HOP, REQUEST_ID_HEADER, connection_tokens

HELD_HIGH_WATER: Final = 64 * 1024
# How a tunnel (or a handshake the upstream answered) ended: the bounded values of its label.
TUNNEL_OUTCOMES: Final = (
    "closed",  # either side closed, or both sent their EOF
    "idle_timeout",  # no byte either way for the service's read_timeout
    "error",  # a side reset or failed
    "draining",  # closed by a drain at its deadline
    "refused",  # the upstream answered the handshake with another status than 101
)
_DROP_101: Final = HOP_BY_HOP | {REQUEST_ID_HEADER, b"content-length"}
_monotonic: Final = time.monotonic


class UpgradeExchange(Exchange):
    """An ``Exchange`` for a WebSocket handshake, and then the tunnel it opens."""

    __slots__ = ("client_side", "held", "held_bytes", "outcome", "relay", "switching", "tunnel")

    def init_upgrade(self) -> None:
        """Set the upgrade's own state (the constructor is ``Exchange``'s)."""
        self.keep_alive = False  # whatever happens, this client connection ends with this exchange
        self.held: list[bytes] = []
        self.held_bytes = 0
        self.client_side: _ClientSide | None = None
        self.relay = Relay(self, self.client.sweeper)
        self.switching = False  # a 101 head arrived; the upstream parser is about to stop
        self.tunnel: UpstreamConnection | None = None  # the upgraded upstream connection
        self.outcome = ""

    # -- holding the client's bytes ----------------------------------------------------------------

    def hold_client(self, rest: bytes) -> None:
        """The client's parser stopped after this handshake's head: take over its transport."""
        if self.client_side is not None:
            return
        transport = self.client.transport
        if transport.is_closing():
            return
        side = self.client_side = _ClientSide(self)
        transport.set_protocol(side)
        if rest:
            self.client_data(rest)

    def client_data(self, data: bytes) -> None:
        relay = self.relay
        if relay.relaying:
            relay.from_client(data)
        elif not self.finished and self.local is None and not relay.closed:
            self.held.append(data)
            self.held_bytes += len(data)
            if self.held_bytes > HELD_HIGH_WATER:
                self.client.pause_reading(PAUSE_PENDING, True)

    def client_eof(self) -> bool:
        relay = self.relay
        if relay.relaying:
            if relay.client_ended():
                self._end_tunnel("closed")
        else:
            relay.client_eof = True  # passed on once relaying
        return True  # half-close: the answer (or the tunnel's other direction) may still come

    def client_write_paused(self, paused: bool) -> None:
        if self.relay.relaying:
            self.relay.client_write_paused(paused)
        else:
            super().client_write_paused(paused)

    def client_connection_lost(self, exc: Exception | None) -> None:
        if self.relay.relaying:
            self._end_tunnel("error" if exc is not None else "closed")
        self.client.connection_lost(exc)  # the client connection's own bookkeeping: client_lost

    # -- the upstream's answer ---------------------------------------------------------------------

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        if status != 101:
            super().response_head(status, reason, headers)
            if self.started and not self.outcome:  # relayed (not retried): no tunnel
                self.outcome = "refused"
                service = self.service
                assert service is not None
                self.client.stats.tunnel_ended(self.route_name, service.name, "refused")
            return
        self.switching = True  # the response ends here whatever follows; see response_complete
        upgrade = b""
        for name, value in headers:
            if name.lower() == b"upgrade":
                upgrade = value.strip()
        if upgrade.lower() != b"websocket":
            return  # a switch to something else: response_upgraded refuses it (502)
        service = self.service
        endpoint = self.endpoint
        assert service is not None and endpoint is not None
        now = _monotonic()
        if self.trace.recording:
            self.trace.end_try(now, status=status)
        service.outlier.success(endpoint)
        self.status = 101
        self.t_first_byte = now
        self.switching = True
        self.out.append(_head_101(reason, headers, upgrade, self))

    def response_complete(self) -> None:
        if self.switching:
            return  # a 101 "completes" at its head: the tunnel (or a 502) follows, not a finish
        upstream = self.upstream
        if upstream is not None:
            upstream.keep_alive = False  # it was sent Connection: upgrade; it is not reused
        super().response_complete()

    def response_flush(self, connection: UpstreamConnection) -> None:
        if self.switching and connection is self.upstream:
            # A 101 without the parser stopping for an upgrade: nothing can follow it safely.
            self.switching = False
            self.out.clear()
            self.upstream = None
            connection.close()
            self.fail(502, "upstream switched protocols badly", responses.UPSTREAM_BAD_RESPONSE)
            return
        super().response_flush(connection)

    def response_upgraded(self, connection: UpstreamConnection, rest: bytes) -> bool:
        """The upstream switched to WebSocket: the two connections become one tunnel."""
        if self.status != 101 or connection is not self.upstream or self.finished:
            self.switching = False
            self.out.clear()
            return False  # the connection reports an invalid response: 502, or a retry
        service = self.service
        assert service is not None
        client = self.client
        if self.client_side is None:
            self.hold_client(b"")
        # The request is over: it leaves the requests in flight and its timeouts.
        self.upstream = None
        if self.counted:
            self.counted = False
            service.active_requests -= 1
        if self.retrying:
            self.retrying = False
            service.active_retries -= 1
        self.request_deadline = 0.0
        if not self.in_sweeper:
            self.in_sweeper = True
            client.sweeper.add(self)
        # The upstream connection: out of its pool's care, still counted as open.
        self.tunnel = connection
        connection.exchange = None
        connection.deadline = 0.0
        connection.transport.set_protocol(_UpstreamSide(self, connection))
        if client.paused:
            client.pause_reading(PAUSE_PENDING | PAUSE_UPSTREAM, False)
        relay = self.relay
        relay.client_full = client.write_paused
        relay.upstream_full = False
        out = self.out
        head = b"".join(out)
        out.clear()
        self.bytes_out += len(head)
        self.started = self.complete = True
        # The relay writes directly from now on: what is held for the client goes first.
        client.sweeper.writes.flush()
        client.transport.write(head)
        client.stats.tunnel_opened()
        held = b"".join(self.held)
        self.held = []
        self.held_bytes = 0
        relay.start(client.transport, connection.transport, service.read_timeout, held, rest)
        if relay.client_eof and relay.upstream_eof:
            self._end_tunnel("closed")
        return True

    # -- the tunnel --------------------------------------------------------------------------------

    def upstream_side_eof(self) -> bool:
        if self.relay.upstream_ended():
            self._end_tunnel("closed")
        return True

    def upstream_side_lost(self, connection: UpstreamConnection, exc: Exception | None) -> None:
        connection.connection_lost(exc)  # the pool's and the breaker's count of open connections
        self._end_tunnel("error" if exc is not None else "closed")

    def on_deadline(self) -> None:
        if self.tunnel is not None:
            if not self.relay.closed:
                self._end_tunnel("idle_timeout")
            return
        super().on_deadline()

    def _end_tunnel(self, outcome: str) -> None:
        """Close both sides; the exchange is accounted when the client connection is gone."""
        if not self.outcome:
            self.outcome = outcome
        self.relay.close()

    def client_lost(self) -> None:
        if self.tunnel is not None and not self.finished:
            relay = self.relay
            relay.close()
            self.body_received += relay.bytes_in
            self.bytes_out += relay.bytes_out
            outcome = self.outcome
            if not outcome or (outcome == "closed" and self.client.draining):
                outcome = "draining" if self.client.draining else "closed"
            service = self.service
            self.client.stats.tunnel_ended(
                self.route_name, service.name if service is not None else "", outcome
            )
        super().client_lost()


def _head_101(
    reason: bytes, headers: list[tuple[bytes, bytes]], upgrade: bytes, exchange: Exchange
) -> bytes:
    """The client's 101: the upstream's fields less hop-by-hop ones and those its Connection
    names, then the upgrade fields, the request id and what stages queued."""
    named: frozenset[bytes] = frozenset()
    connection = [value for name, value in headers if name.lower() == b"connection"]
    if connection:
        named = connection_tokens(connection)
    parts = [b"HTTP/1.1 101 ", reason or b"Switching Protocols", b"\r\n"]
    for name, value in headers:
        lower = name.lower()
        if lower not in _DROP_101 and lower not in named:
            parts += (name, b": ", value, b"\r\n")
    parts += (b"connection: upgrade\r\nupgrade: ", upgrade, b"\r\n")
    parts += (b"x-request-id: ", exchange.rid, b"\r\n")
    for name, value in exchange.response_headers:
        parts += (name, b": ", value, b"\r\n")
    if exchange.explain is not None:
        parts += (b"x-portway-explain: ", exchange.explain, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class _ClientSide(asyncio.Protocol):
    """The client transport's protocol from the end of the handshake head on."""

    __slots__ = ("exchange",)

    def __init__(self, exchange: UpgradeExchange) -> None:
        self.exchange = exchange

    def data_received(self, data: bytes) -> None:
        self.exchange.client_data(data)

    def eof_received(self) -> bool:
        return self.exchange.client_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self.exchange.client_connection_lost(exc)

    def pause_writing(self) -> None:
        self.exchange.client.pause_writing()

    def resume_writing(self) -> None:
        self.exchange.client.resume_writing()


class _UpstreamSide(asyncio.Protocol):
    """The upgraded upstream connection's protocol."""

    __slots__ = ("connection", "exchange")

    def __init__(self, exchange: UpgradeExchange, connection: UpstreamConnection) -> None:
        self.exchange = exchange
        self.connection = connection

    def data_received(self, data: bytes) -> None:
        self.exchange.relay.from_upstream(data)

    def eof_received(self) -> bool:
        return self.exchange.upstream_side_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self.exchange.upstream_side_lost(self.connection, exc)

    def pause_writing(self) -> None:
        self.exchange.relay.upstream_write_paused(True)

    def resume_writing(self) -> None:
        self.exchange.relay.upstream_write_paused(False)
