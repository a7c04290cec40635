"""The ACME process: one per ``portway run`` with ``acme: true`` certificates, forked by the
supervisor like the health prober, restarted by it with back-off, reloaded by ``SIGHUP``.

One process, not one per worker: a CA must see one order per certificate, and the account key is
used by one writer. The event loop only waits (for signals and for the next certificate due);
every ACME call blocks on the network, so each pass of ``CertificateManager.run_due`` runs in a
daemon thread. A reload arriving during a pass is applied when the pass ends (the manager is not
shared between threads). ``SIGTERM`` does not wait for a pass: an order cut short leaves the
served files as they were (they are only ever replaced by complete ones) and its challenge files
are cleaned up by the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from portway.acme.manager import CertificateManager
from portway.config.model import Config
from portway.errors import ConfigError

log = logging.getLogger("portway.acme")

T = TypeVar("T")
ConfigLoader = Callable[[], Config]
# The longest sleep between two passes: the wall clock may jump (suspend, NTP), and looking again
# costs nothing when nothing is due.
MAX_SLEEP = 3600.0


def in_thread(work: Callable[[], T]) -> asyncio.Future[T]:
    """Run ``work`` in a daemon thread; its result arrives as a future of the running loop. A
    daemon thread, unlike an executor's, does not hold up the process's exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def target() -> None:
        deliver: Callable[[], None]
        try:
            result = work()
        except BaseException as exc:
            deliver = functools.partial(future.set_exception, exc)
        else:
            deliver = functools.partial(future.set_result, result)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(settle, deliver)

    threading.Thread(target=target, name="portway-acme", daemon=True).start()
    return future


async def _wait_any(
    future: asyncio.Future[T] | None, events: list[asyncio.Event], timeout: float | None = None
) -> None:
    """Until ``future`` is done, one of ``events`` is set, or ``timeout`` passes; ``future`` is
    left running (it may be a thread's)."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    watched: set[asyncio.Future[Any]] = set(waiters)
    if future is not None:
        watched.add(future)
    try:
        await asyncio.wait(watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def run_acme(config: Config, reload: ConfigLoader | None, ready_fd: int) -> int:
    """The ACME process's whole life: keep certificates obtained and renewed until SIGTERM/SIGINT.

    SIGHUP loads the config through ``reload`` and follows its certificate list (a config that
    does not load is reported and the current one kept). Returns the exit code.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    manager = CertificateManager(config)
    log.info(
        "ACME process (pid %d) keeps %d certificate(s) from %s",
        os.getpid(),
        len(manager.records),
        config.acme.directory_url,
    )
    os.write(ready_fd, b"R")
    os.close(ready_fd)
    stopping = asyncio.Event()
    wake = asyncio.Event()
    pending: list[Config] = []

    def on_reload() -> None:
        if reload is None:
            return
        try:
            pending.append(reload())
        except ConfigError as exc:
            log.error("ACME: reload refused, the current certificates are kept:\n%s", exc)
            return
        wake.set()

    async def main() -> None:
        """Pass after pass: run what is due in a thread, then sleep until the next certificate is
        due, a reload arrives or the process is stopped. A reload during a pass is applied once
        the pass is over: the manager is never used by two threads."""
        while not stopping.is_set():
            if pending:
                manager.reload(pending[-1])
                pending.clear()
                log.info("ACME: reloaded; %d certificate(s)", len(manager.records))
            wake.clear()
            current = in_thread(manager.run_due)
            await _wait_any(current, [stopping])
            if not current.done():
                log.info("ACME: stopping with an order in flight; it is abandoned")
                return
            due = current.result()
            if not pending:
                delay = min(MAX_SLEEP, max(0.0, due - time.time()))
                await _wait_any(None, [stopping, wake], timeout=delay)
        manager.close()

    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return 0
