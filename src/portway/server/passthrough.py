"""TLS passthrough: route a raw TLS connection by the SNI of its ClientHello and relay it (L4).

Theory of operation. ``PassthroughConnection`` is the asyncio Protocol of one connection accepted
on a passthrough listener. It goes through three states:

1. ``HELLO``: bytes are kept and fed to a sans-IO ``ClientHelloParser`` until it has the server
   name (or refuses the bytes: not TLS, malformed, too large). The sweeper enforces
   ``client_hello_timeout`` through ``deadline``, as ``ClientConnection`` enforces its header
   timeout. Nothing is ever written to the client here: without terminating TLS the gateway cannot
   speak TLS (not even an alert), so every refusal is a close.
2. ``CONNECTING``: reading is paused (what arrived is held, nothing more is read), the current SNI
   table (``routes()``: reloads swap it) names a service, and the service picks an instance exactly
   as an exchange's first try does (``Service.pick_stream``: health, outlier ejection, panic, slow
   start). The connection is opened within the service's ``connect_timeout`` and counts against its
   ``max_connections``; a refused or timed-out connect is reported to the outlier detector and
   another instance is tried, ``connect_retries`` times. A connect that succeeds counts as the
   instance's success (the only outcome a byte stream shows).
3. ``RELAYING``: the held bytes (the ClientHello, and any early data) go upstream verbatim, then
   bytes flow both ways as they arrive, one write per read. Flow control: when one side's write
   buffer passes its high-water mark (``pause_writing``), the other side stops being read until it
   drains (``resume_writing``). Half-close: an EOF from one side is passed on with ``write_eof``,
   and the connection ends when both sides have sent theirs, or when either side closes or fails.
   The service's ``read_timeout`` is an idle timeout: it is pushed forward by every read on either
   side and by every drained write buffer, and when it passes both sides are closed. This state is
   ``proxy.relay.Relay``, shared with WebSocket tunnels (``proxy.upgrade``).

The connection registers in ``ctx.connections`` (a drain closes it; ``idle`` says whether a stream
is relayed yet) and in the worker's sweeper. When it ends it records one outcome (``OUTCOMES``)
and the bytes relayed each way in the worker's statistics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from portway.balancing import Endpoint
from portway.proxy.relay import Relay
from portway.proxy.service import Service
from portway.server.context import WorkerContext
from portway.tls.client_hello import ClientHello, ClientHelloParser, Rejected
from portway.tls.sni_routes import SniRoutes

log = logging.getLogger("portway.passthrough")

HELLO, CONNECTING, RELAYING, CLOSED = range(4)

# How a passthrough connection ended: the bounded values of its statistics label.
OUTCOMES = (
    "relayed",  # a stream was relayed; either side ended it
    "idle_timeout",  # a relayed stream saw no byte for the service's read_timeout
    "hello_timeout",  # no complete ClientHello within client_hello_timeout
    "not_tls",  # the first bytes are not a TLS handshake record (plain HTTP, say)
    "malformed",  # a TLS record or ClientHello that breaks its RFC, or an invalid server name
    "too_large",  # a ClientHello beyond the parser's size cap
    "no_route",  # no route for the name and no default service
    "no_healthy_instance",  # the service had no instance to pick
    "overflow_max_connections",  # the service is at its circuit breaker's max_connections
    "connect_failed",  # every instance tried refused or failed the connect
    "connect_timeout",  # the last instance tried did not accept within connect_timeout
    "client_closed",  # the client left before a stream was relayed
    "draining",  # accepted while the worker drains
)


class _Upstream(asyncio.Protocol):
    """The instance side of one passthrough connection: reports everything to its owner."""

    __slots__ = ("owner", "transport")

    def __init__(self, owner: PassthroughConnection) -> None:
        self.owner = owner
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # connection_made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport

    def data_received(self, data: bytes) -> None:
        self.owner.upstream_data(self, data)

    def eof_received(self) -> bool:
        return self.owner.upstream_eof(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.upstream_lost(self, exc)

    def pause_writing(self) -> None:
        self.owner.upstream_write_paused(self, True)

    def resume_writing(self) -> None:
        self.owner.upstream_write_paused(self, False)


class PassthroughConnection(asyncio.Protocol):
    __slots__ = (
        "client_ip",
        "connect_task",
        "ctx",
        "deadline",
        "endpoint",
        "hello_timeout",
        "idle_timeout",
        "listener",
        "outcome",
        "parser",
        "pending",
        "reading_paused",
        "relay",
        "routes",
        "server_name",
        "service",
        "service_name",
        "state",
        "sweeper",
        "transport",
        "tried",
        "upstream",
    )

    def __init__(
        self,
        ctx: WorkerContext,
        routes: Callable[[], SniRoutes[Service]],
        *,
        client_hello_timeout: float,
        listener: str = "",
    ) -> None:
        """``routes`` returns the listener's current SNI table (called once per connection, when
        its ClientHello is read); ``listener`` labels the statistics."""
        self.ctx = ctx
        self.sweeper = ctx.sweeper
        self.routes = routes
        self.hello_timeout = client_hello_timeout
        self.listener = listener
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # connection_made
        self.state = HELLO
        self.deadline = 0.0
        self.client_ip = ""
        self.parser = ClientHelloParser()
        self.pending: list[bytes] = []  # client bytes not yet relayed: the hello, early data
        self.server_name: str | None = None
        self.service: Service | None = None
        self.service_name = ""
        self.endpoint: Endpoint | None = None  # the instance connected to, or being tried
        self.tried: list[Endpoint] = []
        self.upstream: _Upstream | None = None
        self.connect_task: asyncio.Task[None] | None = None  # held: the loop keeps weak refs
        self.idle_timeout = 0.0
        self.reading_paused = False  # we paused reading from the client (while connecting)
        # EOFs, full write buffers and bytes relayed each way, from the start (an EOF may come
        # while connecting); it relays from RELAYING on.
        self.relay = Relay(self, ctx.sweeper)
        self.outcome = ""

    # -- the client side ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else ""
        ctx = self.ctx
        ctx.connections.add(self)
        self.sweeper.add(self)
        ctx.stats.connections_total += 1
        if self.hello_timeout:
            self.deadline = self.sweeper.now + self.hello_timeout
        if ctx.draining:
            self._end("draining")

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == RELAYING:
            self.relay.from_client(data)
        elif state == HELLO:
            self.pending.append(data)
            result = self.parser.feed(data)
            if isinstance(result, Rejected):
                log.debug("passthrough from %s closed: %s", self.client_ip, result.reason)
                self._end(result.kind)
            elif result is not None:
                self._route(result)
        elif state == CONNECTING:
            self.pending.append(data)  # read in the same batch as the end of the hello

    def eof_received(self) -> bool:
        if self.state == HELLO:
            self.relay.client_eof = True
            self._end("client_closed")
            return False
        if self.relay.client_ended():
            self.close()
        return True  # keep the connection: the instance may still answer (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()  # the instance side, if any (the client side is gone already)
        self.ctx.connections.discard(self)
        self.sweeper.discard(self)
        self.pending = []
        relay = self.relay
        self.ctx.stats.passthrough_ended(
            self.listener, self.service_name, self.outcome, relay.bytes_in, relay.bytes_out
        )

    def pause_writing(self) -> None:
        self.relay.client_write_paused(True)

    def resume_writing(self) -> None:
        self.relay.client_write_paused(False)

    def on_deadline(self) -> None:
        """The sweeper: the ClientHello did not arrive in time, or the relayed stream is idle."""
        if self.state == HELLO:
            log.debug("passthrough from %s: no ClientHello in time", self.client_ip)
            self._end("hello_timeout")
        elif self.state == RELAYING:
            self._end("idle_timeout")

    @property
    def idle(self) -> bool:
        """No stream relayed yet (still reading the ClientHello): a drain may close it at once."""
        return self.state == HELLO

    def close(self) -> None:
        """End the connection: both sides are closed; what was written still goes out unless the
        side it goes to has stopped reading."""
        if self.state == CLOSED:
            return
        if not self.outcome:
            self.outcome = "relayed" if self.state == RELAYING else "client_closed"
        self.state = CLOSED
        relay = self.relay
        if relay.client is None:  # not relaying yet: the client side only (the connect task
            relay.client = self.transport  # closes an upstream that arrives late)
        relay.close()

    abort = close

    def _end(self, outcome: str) -> None:
        if not self.outcome:
            self.outcome = outcome
        self.close()

    def _pause_client(self, paused: bool) -> None:
        if paused != self.reading_paused and not self.transport.is_closing():
            self.reading_paused = paused
            if paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    # -- routing and connecting --------------------------------------------------------------------

    def _route(self, hello: ClientHello) -> None:
        self.deadline = 0.0  # connects are bounded by connect_timeout, each attempt
        self.server_name = hello.server_name
        found = self.routes().match(hello.server_name)
        if found is None:
            log.debug("passthrough from %s: no route for %s", self.client_ip, hello.server_name)
            self._end("no_route")
            return
        log.debug(
            "passthrough from %s: server name %s alpn %s -> service %s (%s)",
            self.client_ip,
            hello.server_name,
            ",".join(hello.alpn) or "-",
            found.service,
            found.rule,
        )
        self.service = found.target
        self.service_name = found.service
        self.state = CONNECTING
        self._pause_client(True)
        self._try(None)

    def _try(self, last_error: BaseException | None) -> None:
        """Pick an instance not tried yet and start connecting to it."""
        service = self.service
        assert service is not None
        endpoint = service.pick_stream(self.client_ip, self.tried, self.server_name or "")
        if endpoint is None:
            if last_error is None:
                self._end("no_healthy_instance")
            else:
                self._end_connect_failed(last_error)
            return
        if not service.may_open_connection():
            self.ctx.stats.overflowed(service.name, "max_connections")
            self._end("overflow_max_connections")
            return
        service.open_connections += 1  # counted from the start of the connect, as exchanges do
        endpoint.active += 1
        self.endpoint = endpoint
        # Not cancelled when the client leaves: it ends within connect_timeout and gives back what
        # it counted either way (a task cancelled before its first step could not).
        self.connect_task = self.ctx.loop.create_task(self._connect(service, endpoint))

    async def _connect(self, service: Service, endpoint: Endpoint) -> None:
        try:
            async with asyncio.timeout(service.connect_timeout or None):
                _, upstream = await self.ctx.loop.create_connection(
                    lambda: _Upstream(self), endpoint.host, endpoint.port
                )
        except (OSError, TimeoutError) as exc:
            self.connect_task = None
            endpoint.active -= 1
            service.connection_closed()
            self._connect_failed(service, endpoint, exc)
            return
        self.connect_task = None
        self.upstream = upstream
        service.outlier.success(endpoint)
        if self.state != CONNECTING:  # the client left meanwhile
            upstream.transport.close()
            return
        self.state = RELAYING
        self.idle_timeout = service.read_timeout
        data = b"".join(self.pending)
        self.pending = []
        self.reading_paused = False  # the relay decides from now on
        self.relay.client_paused = True
        self.relay.start(self.transport, upstream.transport, service.read_timeout, data)

    def _connect_failed(self, service: Service, endpoint: Endpoint, exc: BaseException) -> None:
        service.failed(endpoint, "connect")
        if self.state != CONNECTING:
            return
        log.debug("passthrough to %s: connect to %s failed: %r", service.name, endpoint, exc)
        self.tried.append(endpoint)
        if len(self.tried) <= service.connect_retries:
            self._try(exc)
        else:
            self._end_connect_failed(exc)

    def _end_connect_failed(self, exc: BaseException) -> None:
        self._end("connect_timeout" if isinstance(exc, TimeoutError) else "connect_failed")

    # -- the instance side (called by _Upstream) ---------------------------------------------------

    def upstream_data(self, upstream: _Upstream, data: bytes) -> None:
        if upstream is not self.upstream or self.state != RELAYING:
            return
        self.relay.from_upstream(data)

    def upstream_eof(self, upstream: _Upstream) -> bool:
        if upstream is not self.upstream:
            return False
        if self.relay.upstream_ended():
            self.close()
        return True  # keep the connection: the client may still send (half-close)

    def upstream_lost(self, upstream: _Upstream, exc: Exception | None) -> None:
        if upstream is not self.upstream:
            return
        service, endpoint = self.service, self.endpoint
        if service is not None and endpoint is not None:
            endpoint.active -= 1
            service.connection_closed()
            self.endpoint = None
        if exc is not None and self.state != CLOSED:
            log.debug("passthrough to service %s: %s failed: %r", self.service_name, endpoint, exc)
        self.close()

    def upstream_write_paused(self, upstream: _Upstream, paused: bool) -> None:
        if upstream is not self.upstream:
            return
        self.relay.upstream_write_paused(paused)
