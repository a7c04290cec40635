"""Watching the manifest directory and asking the supervisor to reload.

A thread waits on ``watchfiles`` (inotify on Linux) for changes under the directory, debounced, and
when the manifests' digest changed it sends SIGHUP to its own process. The supervisor reacts to
SIGHUP as for any reload: it calls the loader (``ManifestController.load``, which rebuilds), and if
that succeeds tells its workers, who read the published config. The thread never touches the
supervisor's state, so supervisor.py needs no change.

Signals: the supervisor waits for SIGHUP, SIGCHLD, SIGTERM and SIGINT with ``sigtimedwait`` and
keeps them blocked. A process-directed signal goes to any thread that does not block it, so the
watcher thread must block them all: otherwise a SIGCHLD delivered to it would be lost (a dead
worker never restarted) and a SIGHUP would take its default action. ``start`` blocks them in the
calling thread before starting the watcher (which inherits the mask) and leaves them blocked,
closing the window before the supervisor blocks them itself. Call it from the main thread right
before ``Supervisor.run``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import watchfiles

from portway.kubernetes.load import directory_digest

log = logging.getLogger("portway.kubernetes")
SUPERVISOR_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def reload_self() -> None:
    os.kill(os.getpid(), signal.SIGHUP)


class DirectoryWatcher:
    def __init__(
        self,
        directory: Path,
        on_change: Callable[[], None] = reload_self,
        debounce_ms: int = 200,
    ) -> None:
        self.directory = directory
        self.on_change = on_change
        self.debounce_ms = debounce_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="manifest-watcher", daemon=True)
        self._digest = directory_digest(directory)

    def start(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)  # inherited already; sure
        try:
            for _ in watchfiles.watch(
                self.directory,
                stop_event=self._stop,
                debounce=self.debounce_ms,
                step=20,
                rust_timeout=500,
                raise_interrupt=False,
            ):
                self.check()
        except Exception:  # the watcher must not die silently: say why reloads stopped
            log.exception("manifest watcher failed: changes under %s are no longer applied "
                          "(SIGHUP still reloads)", self.directory)  # fmt: skip

    def check(self) -> bool:
        """Call ``on_change`` if the manifests changed since the last check; True if they did."""
        digest = directory_digest(self.directory)
        if digest == self._digest:
            return False
        self._digest = digest
        log.info("manifests under %s changed: reloading", self.directory)
        self.on_change()
        return True
