"""The admin process of ``portway run``: forked by the supervisor like the health prober.

It serves the admin API from the listening socket the supervisor bound (so a restarted admin process
serves the same port at once), reads the boards the supervisor mapped before forking, reloads the
config on SIGHUP (the supervisor sends it only once the new config is valid) and exits on SIGTERM.
Serving traffic never waits on it: a scrape costs the workers nothing but their once-a-second
publish.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Callable

from portway.admin.server import AdminServer
from portway.admin.sources import AdminState, BoardSource
from portway.config.model import Config
from portway.errors import ConfigError
from portway.health.board import Board
from portway.observability.stats_board import StatsBoard

log = logging.getLogger("portway.admin")

_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
OBSERVE_INTERVAL = 1.0  # how often the boards are read between requests (see below)


def run_admin(
    config: Config,
    reload: Callable[[], Config] | None,
    ready_fd: int,
    sock: socket.socket,
    stats: StatsBoard,
    board: Board,
    workers: int,
) -> int:
    """The admin process's whole life; returns its exit code."""
    # Blocked before any thread starts, so the handler threads inherit the mask and every signal
    # reaches the loop below.
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    source = BoardSource(config, stats, board, workers)
    state = AdminState(source)
    server = AdminServer(state, sock)
    server.start()
    os.write(ready_fd, b"R")
    os.close(ready_fd)
    try:
        while True:
            info = signal.sigtimedwait(_SIGNALS, OBSERVE_INTERVAL)
            if info is None:
                # Read the boards even when nobody asks: a worker replaced between two scrapes
                # would otherwise take the counts of its last second with it.
                try:
                    state.observe()
                except Exception:  # a bad read must not end the admin API; the next one may do
                    log.exception("admin: reading the workers' statistics failed")
            elif info.si_signo == signal.SIGHUP:
                _reload(source, reload)
            else:
                return 0
    finally:
        server.stop()


def _reload(source: BoardSource, reload: Callable[[], Config] | None) -> None:
    if reload is None:
        return
    try:
        fresh = reload()
    except ConfigError as exc:
        log.error("admin: reload refused, the current config stays shown:\n%s", exc)
        return
    if fresh.admin.address != source.current.admin.address:
        log.warning("admin.address changed: it takes effect on restart only")
    source.current = fresh
