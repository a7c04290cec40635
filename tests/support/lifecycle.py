"""Helpers that run in the background are context managers the same way: start on entry, stop on exit."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, Self


class StartStop:
    """``with X(...) as x`` starts ``x`` and stops it on leaving, whatever happened inside."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> Any:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


async def close_server(server: asyncio.Server) -> None:
    """``server.close()`` without losing a connection accepted a moment before.

    CPython 3.11's stock loop accepts in a task that makes the transport a loop turn later; if
    the server closed in between, ``Server._attach`` fails an assertion that the loop swallows,
    and the half-made transport's socket stays open until the garbage collector finds it (an
    unclosed-socket warning, in whichever test runs then). So stop watching the listening sockets
    first, let the accepts already under way make their transports, close, and return once each
    has had ``connection_made``: every connection is then a protocol the caller can abort.
    (uvloop's server has no such gap; ``remove_reader`` of a socket it serves is a no-op there.)
    """
    loop = asyncio.get_running_loop()
    for sock in server.sockets:
        loop.remove_reader(sock.fileno())
    # Three loop turns, in order: an accept callback already queued for this turn, the first
    # step of each accept task it made (the transport), then each transport's connection_made.
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    server.close()
    await asyncio.sleep(0)
