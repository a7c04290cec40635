"""``gateway.close_servers`` on the stock loop: a connection accepted as the gateway stops accepting
still becomes a connection (its ``connection_made`` runs), so the drain can close it.

The stock loop accepts in a task that makes the transport a loop turn later. A plain
``server.close()`` in that turn makes ``Server._attach`` fail an assertion, which the loop swallows,
and the accepted socket is then never answered or closed (until the garbage collector finds it).
The tests close in exactly that turn: clients connect (the kernel completes the handshakes), one
loop turn lets the accept callback run after this coroutine's step, and the next one closes
before the accept tasks' first steps.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from portway.gateway import close_servers

CLIENTS = 5


class _Counted(asyncio.Protocol):
    def __init__(self, made: list[asyncio.Transport]) -> None:
        self.made = made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.made.append(transport)


async def _round(close: Callable[[asyncio.Server], Coroutine[Any, Any, None]]) -> tuple[int, int]:
    """Close a server in the turn after it accepted: (protocols made, connection_made calls)."""
    loop = asyncio.get_running_loop()
    made: list[asyncio.Transport] = []
    protocols = 0

    def factory() -> _Counted:
        nonlocal protocols
        protocols += 1
        return _Counted(made)

    server = await loop.create_server(factory, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    connected = [socket.create_connection(("127.0.0.1", port)) for _ in range(CLIENTS)]
    await asyncio.sleep(0)  # the listener is polled: its accept callback is queued after this step
    await asyncio.sleep(0)  # it has run: the accept tasks are queued after this step
    await close(server)
    for _ in range(3):
        await asyncio.sleep(0)
    for transport in made:
        transport.abort()
    await asyncio.sleep(0)
    await server.wait_closed()
    for sock in connected:
        sock.close()
    return protocols, len(made)


async def _gateway_close(server: asyncio.Server) -> None:
    await close_servers([server])


def test_every_connection_accepted_while_closing_is_made() -> None:
    loop = asyncio.new_event_loop()  # the stock loop: uvloop has no such gap
    try:
        assert loop.run_until_complete(_round(_gateway_close)) == (CLIENTS, CLIENTS)
    finally:
        loop.close()
    gc.collect()  # a half-made transport would warn (an error here) when collected


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_plain_close_in_that_turn_loses_every_one_so_the_test_above_can_fail() -> None:
    async def plain_close(server: asyncio.Server) -> None:
        server.close()

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(_round(plain_close)) == (CLIENTS, 0)
    finally:
        loop.close()
    gc.collect()
