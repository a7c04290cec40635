"""Bytes both ways between two stream transports: the part TLS passthrough and upgraded
connections (WebSocket tunnels) share.

A ``Relay`` holds a client transport and an upstream transport and is told, by whichever protocols
own them, what happened on each: data (written to the other side at once, one write per read: no
buffering of its own), an EOF, a full or drained write buffer, a lost connection. It does not own
the protocols because its two users reach the relayed state differently (passthrough after an SNI
lookup and a connect, a WebSocket after an HTTP/1.1 handshake) and keep their own bookkeeping.

- Flow control: when one side's write buffer passes its high-water mark (asyncio
  ``pause_writing``), the other side stops being read until it drains (``resume_writing``). So a
  peer that does not read holds at most one transport buffer of the other's bytes in the gateway.
- Half-close: an EOF from one side is passed on with ``write_eof``; the relay ends when both sides
  have sent theirs (``eof`` returns True when both have), or when either closes or fails.
- Idle timeout: every read on either side and every drained write buffer pushes the owner's sweeper
  ``deadline`` forward by ``idle_timeout``; no timer exists per relay (see ``deadlines``).
- Closing: a side whose write buffer is full is aborted rather than flushed: its peer has stopped
  reading and would otherwise keep the connection open as long as it wants.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from portway.deadlines import Sweeper


class HasDeadline(Protocol):
    deadline: float


class Relay:
    __slots__ = (
        "bytes_in",
        "bytes_out",
        "client",
        "client_eof",
        "client_full",
        "client_paused",
        "closed",
        "idle_timeout",
        "owner",
        "relaying",
        "sweeper",
        "upstream",
        "upstream_eof",
        "upstream_full",
    )

    def __init__(self, owner: HasDeadline, sweeper: Sweeper) -> None:
        """``owner`` is the sweeper member whose ``deadline`` is the relay's idle deadline."""
        self.owner = owner
        self.sweeper = sweeper
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.idle_timeout = 0.0
        self.relaying = False
        self.closed = False
        self.client_eof = False  # the client sent its EOF
        self.upstream_eof = False
        self.client_full = False  # the client's write buffer is past its high-water mark
        self.upstream_full = False
        self.client_paused = False  # we paused reading from the client
        self.bytes_in = 0  # relayed client -> upstream
        self.bytes_out = 0  # relayed upstream -> client

    def start(
        self,
        client: asyncio.Transport,
        upstream: asyncio.Transport,
        idle_timeout: float,
        to_upstream: bytes = b"",
        to_client: bytes = b"",
    ) -> None:
        """Relay from now on; ``to_upstream`` / ``to_client`` are bytes read before (held while
        the relay was being set up), sent first."""
        self.client = client
        self.upstream = upstream
        self.idle_timeout = idle_timeout
        self.relaying = True
        if to_client:
            self.bytes_out += len(to_client)
            client.write(to_client)
        if to_upstream:
            self.bytes_in += len(to_upstream)
            upstream.write(to_upstream)
        if self.client_eof and upstream.can_write_eof():
            upstream.write_eof()
        self.touch()
        if not self.client_eof:
            self._pause_client(self.upstream_full)

    # -- events from the two sides -----------------------------------------------------------------

    def from_client(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is None or self.closed:
            return
        self.bytes_in += len(data)
        upstream.write(data)
        self.touch()

    def from_upstream(self, data: bytes) -> None:
        client = self.client
        if client is None or self.closed:
            return
        self.bytes_out += len(data)
        client.write(data)
        self.touch()

    def client_ended(self) -> bool:
        """The client sent its EOF; True when the relay is over (the upstream had sent its own)."""
        self.client_eof = True
        upstream = self.upstream
        if self.relaying and upstream is not None:
            if self.upstream_eof:
                return True
            if upstream.can_write_eof():
                upstream.write_eof()
        return False

    def upstream_ended(self) -> bool:
        """The upstream sent its EOF; True when the relay is over."""
        self.upstream_eof = True
        if self.client_eof:
            return True
        client = self.client
        if self.relaying and client is not None and client.can_write_eof():
            client.write_eof()
        return False

    def client_write_paused(self, paused: bool) -> None:
        """The client's write buffer filled up (or drained): stop (or resume) reading upstream."""
        self.client_full = paused
        upstream = self.upstream
        if upstream is not None and not upstream.is_closing():
            if paused:
                upstream.pause_reading()
            else:
                upstream.resume_reading()
        if not paused:
            self.touch()

    def upstream_write_paused(self, paused: bool) -> None:
        self.upstream_full = paused
        if self.relaying and not self.client_eof:
            self._pause_client(paused)
        if not paused:
            self.touch()

    # -- upkeep ------------------------------------------------------------------------------------

    def touch(self) -> None:
        if self.relaying:
            idle = self.idle_timeout
            self.owner.deadline = self.sweeper.now + idle if idle else 0.0

    def close(self) -> None:
        """Close both sides: what was written still goes out unless its reader stopped reading."""
        if self.closed:
            return
        self.closed = True
        self.relaying = False
        self.owner.deadline = 0.0
        if self.client is not None:
            close_transport(self.client, flush=not self.client_full)
        if self.upstream is not None:
            close_transport(self.upstream, flush=not self.upstream_full)

    def _pause_client(self, paused: bool) -> None:
        client = self.client
        if client is not None and paused != self.client_paused and not client.is_closing():
            self.client_paused = paused
            if paused:
                client.pause_reading()
            else:
                client.resume_reading()


def close_transport(transport: asyncio.Transport, *, flush: bool) -> None:
    """Close after sending what is buffered, or at once when the peer has stopped reading (its
    buffer would keep the connection open for as long as the peer wants)."""
    if flush:
        transport.close()
    else:
        transport.abort()
