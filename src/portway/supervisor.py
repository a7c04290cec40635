"""Worker processes sharing listener ports through SO_REUSEPORT, and the supervisor that keeps them.

The supervisor binds each listener once without listening, only to resolve port 0 and to hold the
address, then forks N workers. Each worker binds its own SO_REUSEPORT socket to that address, so the
kernel spreads new connections across workers with no accept lock and no shared socket. The
supervisor does not serve traffic: it restarts a worker that dies (with back-off against crash
loops), forwards SIGHUP (reload) after validating the config itself, and on SIGTERM/SIGINT asks
every worker to drain and exits 0 once they have.

Active health checks run in one more child, the prober, forked when a service has a
``health_check``: it checks each instance once and writes the results to a ``Board`` (shared memory
the supervisor maps before forking), which every worker reads. N workers thus cost one check per
instance and interval, not N, and all workers agree on which instances are up.

The admin API runs in one more child, the admin process, on a socket the supervisor binds once (so
``:0`` resolves before anything starts and a restarted admin process serves the same port). Each
worker publishes its statistics about once a second to its slot of a ``StatsBoard`` (shared memory
mapped before forking, like the health board); the admin process sums them. The supervisor
publishes its reload counters to the board's last slot: it alone decides whether a reload is taken.

ACME certificates are obtained and renewed by one more child, the ACME process (``acme.process``),
forked when a listener has an ``acme: true`` certificate: one account and one order per
certificate, whatever the number of workers. It is started after the workers are ready, because
the CA's HTTP-01 requests reach their plain listeners at once; it writes the certificate files that
the workers' HTTPS listeners reload, and the challenge files their plain listeners answer with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from portway.acme.manager import needs_acme
from portway.acme.process import run_acme
from portway.admin.process import run_admin
from portway.admin.server import bind_admin
from portway.config.model import Config
from portway.config.types import format_host_port, parse_host_port
from portway.errors import ConfigError
from portway.gateway import Gateway, bind_listener, new_event_loop
from portway.health import Board, BoardSink, Prober
from portway.observability.stats import RECENT_RELOADS, reload_event
from portway.observability.stats_board import StatsBoard

log = logging.getLogger("portway.workers")

_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
READY_TIMEOUT = 30.0
MAX_RESTART_DELAY = 5.0

ConfigLoader = Callable[[], Config]


def reserve(address: str) -> socket.socket:
    """Bind ``address`` with SO_REUSEPORT but do not listen: fixes the port for the workers."""
    host, port = parse_host_port(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def run_worker(
    config: Config,
    addresses: list[str],
    reload: ConfigLoader | None,
    ready_fd: int,
    board: Board | None = None,
    stats: tuple[StatsBoard, int] | None = None,
) -> int:
    """A worker process's whole life: serve until SIGTERM/SIGINT, then drain. Returns the exit code.

    With a ``board`` the worker follows the prober process's health checks instead of running its
    own; without one it runs them itself. With ``stats`` (a board and this worker's slot) it
    publishes its statistics there for the admin process.
    """
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    gateway = Gateway(config, loop, health=board if board is not None else "local", stats=stats)
    sockets = [bind_listener(a, reuse_port=True) for a in addresses]
    loop.run_until_complete(gateway.start(sockets))
    os.write(ready_fd, b"R")
    os.close(ready_fd)
    stopping = asyncio.Event()

    def on_reload() -> None:
        if reload is None:
            return
        try:
            gateway.reload(reload())
        except ConfigError as exc:
            gateway.ctx.stats.reloaded(False, str(exc))
            log.error("reload refused, the current config keeps serving:\n%s", exc)

    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, on_reload)

    async def serve() -> bool:
        await stopping.wait()
        return await gateway.drain(config.server.timeouts.drain)

    finished = loop.run_until_complete(serve())
    if not finished:
        log.warning("drain deadline reached: remaining connections were closed")
    loop.close()
    return 0


def run_prober(config: Config, reload: ConfigLoader | None, ready_fd: int, board: Board) -> int:
    """The prober process's whole life: check instances and write the board until SIGTERM/SIGINT."""
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    prober = Prober(config, BoardSink(board), loop)
    prober.start()
    log.info("health prober (pid %d) checks %d instances", os.getpid(), len(prober.targets))
    os.write(ready_fd, b"R")
    os.close(ready_fd)
    stopping = asyncio.Event()

    def on_reload() -> None:
        if reload is None:
            return
        try:
            prober.reload(reload())
        except ConfigError as exc:
            log.error(
                "health prober: reload refused, the current config keeps being checked:\n%s", exc
            )

    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    loop.run_until_complete(stopping.wait())
    loop.run_until_complete(prober.close())
    loop.close()
    return 0


def needs_prober(config: Config) -> bool:
    return any(service.health_check is not None for service in config.services.values())


@dataclass
class _Slot:
    index: int
    role: Literal["worker", "prober", "admin", "acme"] = "worker"
    pid: int = 0
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0

    @property
    def label(self) -> str:
        if self.role == "worker":
            return f"worker {self.index}"
        labels = {"prober": "health prober", "admin": "admin process", "acme": "ACME process"}
        return labels[self.role]


@dataclass
class Supervisor:
    config: Config
    workers: int
    reload: ConfigLoader | None = None
    slots: list[_Slot] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    reserved: list[socket.socket] = field(default_factory=list)
    board: Board | None = None
    stats: StatsBoard | None = None
    admin_socket: socket.socket | None = None
    reloads: dict[str, float] = field(
        default_factory=lambda: {"reloads_ok": 0, "reloads_failed": 0, "last_reload_ok": 0.0}
    )
    reload_events: list[list[Any]] = field(default_factory=list)  # the last RECENT_RELOADS
    # More of the supervisor's own record for the admin API (manifest/controller mode: the
    # issues of the last build), read after each reload.
    extra_stats: Callable[[], dict[str, Any]] | None = None

    def run(self) -> int:
        reserved = self.reserved = [reserve(lc.address) for lc in self.config.listeners]
        try:
            for sock in reserved:
                host, port = sock.getsockname()[:2]
                self.addresses.append(format_host_port(host, port))
            admin = self.config.admin.address
            if admin is not None:
                try:
                    self.admin_socket = bind_admin(admin)
                except OSError as exc:
                    log.error("cannot listen on the admin address %s: %s", admin, exc.strerror)
                    return 1
            signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
            # Mapped before any fork: the prober, the admin process and every worker inherit the
            # same pages.
            self.board = Board()
            if self.admin_socket is not None:  # nobody would read the statistics otherwise
                self.stats = StatsBoard(self.workers + 1)
                self._publish_reloads()
            self.slots = [_Slot(i) for i in range(self.workers)]
            if needs_prober(self.config):
                self.slots.append(_Slot(len(self.slots), role="prober"))
            if self.admin_socket is not None:
                self.slots.append(_Slot(len(self.slots), role="admin"))
            ready = [self._spawn(slot) for slot in self.slots]
            if not self._wait_ready(ready):
                self._stop_all(timeout=5.0)
                return 1
            if needs_acme(self.config) and not self._start_acme():
                self._stop_all(timeout=5.0)
                return 1
            if self.admin_socket is not None:  # before "listening on": tests read it by then
                host, port = self.admin_socket.getsockname()[:2]
                pid = next(s.pid for s in self.slots if s.role == "admin")
                log.info("admin on http://%s (pid %d)", format_host_port(host, port), pid)
            _warn_per_worker_limits(self.config, self.workers)
            for address in self.addresses:
                log.info(
                    "listening on http://%s (%d worker%s, supervisor pid %d)",
                    address,
                    self.workers,
                    "" if self.workers == 1 else "s",
                    os.getpid(),
                )
            return self._supervise()
        finally:
            for sock in reserved:
                sock.close()
            if self.admin_socket is not None:
                self.admin_socket.close()

    def _publish_reloads(self) -> None:
        if self.stats is not None:
            self.stats.publish(
                self.workers,
                {
                    "role": "supervisor",
                    **self.reloads,
                    "reload_events": self.reload_events,
                    **(self.extra_stats() if self.extra_stats is not None else {}),
                },
            )

    def _spawn(self, slot: _Slot) -> int:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: a worker, the prober, the admin process or the ACME process
            os.close(read_fd)
            for sock in self.reserved:
                sock.close()
            if self.admin_socket is not None and slot.role != "admin":
                self.admin_socket.close()
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
                for sig in _SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                assert self.board is not None
                config, reload, board, stats = self.config, self.reload, self.board, self.stats
                if slot.role == "prober":
                    code = run_prober(config, reload, write_fd, board)
                elif slot.role == "acme":
                    code = run_acme(config, reload, write_fd)
                elif slot.role == "admin":
                    assert self.admin_socket is not None and stats is not None
                    admin = self.admin_socket
                    code = run_admin(config, reload, write_fd, admin, stats, board, self.workers)
                else:
                    own = (stats, slot.index) if stats is not None else None
                    code = run_worker(config, self.addresses, reload, write_fd, board, own)
            except BaseException:
                log.exception("%s failed", slot.label)
            finally:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(write_fd)
        slot.pid = pid
        slot.started = time.monotonic()
        return read_fd

    def _wait_ready(self, fds: list[int]) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        pending = set(fds)
        ok = True
        while pending and time.monotonic() < deadline:
            readable, _, _ = select.select(list(pending), [], [], 0.2)
            for fd in readable:
                if os.read(fd, 1) != b"R":
                    ok = False
                os.close(fd)
                pending.discard(fd)
        for fd in pending:
            os.close(fd)
        if pending or not ok:
            log.error("workers did not start; see the errors above")
            return False
        return True

    def _supervise(self) -> int:
        while True:
            now = time.monotonic()
            due = [s.restart_at for s in self.slots if s.pid == 0]
            timeout = max(0.05, min(due) - now) if due else 1.0
            info = signal.sigtimedwait(_SIGNALS, timeout)
            if info is None:
                self._restart_due()
                continue
            sig = info.si_signo
            if sig == signal.SIGCHLD:
                self._reap()
                self._restart_due()
            elif sig == signal.SIGHUP:
                self._reload()
            else:
                log.info("%s: draining %d workers", signal.Signals(sig).name, self.workers)
                self._stop_all(timeout=self.config.server.timeouts.drain + 5.0)
                return 0

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for slot in self.slots:
                if slot.pid == pid:
                    lived = time.monotonic() - slot.started
                    slot.failures = slot.failures + 1 if lived < 10.0 else 1
                    delay = min(MAX_RESTART_DELAY, 0.1 * 2 ** (slot.failures - 1))
                    slot.pid = 0
                    slot.restart_at = time.monotonic() + delay
                    log.error(
                        "%s (pid %d) exited (%s) after %.1fs; restarting in %.1fs",
                        slot.label,
                        pid,
                        _describe_status(status),
                        lived,
                        delay,
                    )

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.pid == 0 and slot.restart_at <= now:
                fd = self._spawn(slot)
                if self._wait_ready([fd]):
                    log.info("%s restarted as pid %d", slot.label, slot.pid)

    def _reload(self) -> None:
        if self.reload is None:
            log.warning("SIGHUP: no config file to reload")
            return
        try:
            self.config = self.reload()
        except ConfigError as exc:
            self.reloads["reloads_failed"] += 1
            self._remember_reload(False, str(exc))
            self._publish_reloads()
            log.error("SIGHUP: the new config is invalid, nothing changes:\n%s", exc)
            return
        self.reloads["reloads_ok"] += 1
        self.reloads["last_reload_ok"] = time.time()
        self._remember_reload(True, None)
        self._publish_reloads()
        log.info("SIGHUP: config is valid; workers reload it")
        _warn_per_worker_limits(self.config, self.workers)
        for slot in self.slots:
            if slot.pid:
                os.kill(slot.pid, signal.SIGHUP)
        if needs_prober(self.config) and not any(s.role == "prober" for s in self.slots):
            # The first health check came with this config: the prober starts with it.
            slot = _Slot(len(self.slots), role="prober")
            self.slots.append(slot)
            if self._wait_ready([self._spawn(slot)]):
                log.info("health prober started as pid %d", slot.pid)
        if needs_acme(self.config) and not any(s.role == "acme" for s in self.slots):
            self._start_acme()  # the first ACME certificate came with this config

    def _remember_reload(self, ok: bool, error: str | None) -> None:
        events = [*self.reload_events, reload_event(time.time(), ok, error)]
        self.reload_events = events[-RECENT_RELOADS:]

    def _start_acme(self) -> bool:
        slot = _Slot(len(self.slots), role="acme")
        self.slots.append(slot)
        if not self._wait_ready([self._spawn(slot)]):
            return False
        log.info("ACME process started as pid %d", slot.pid)
        return True

    def _stop_all(self, timeout: float) -> None:
        for slot in self.slots:
            if slot.pid:
                _kill(slot.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(s.pid for s in self.slots) and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.02)
                continue
            for slot in self.slots:
                if slot.pid == pid:
                    slot.pid = 0
        for slot in self.slots:
            if slot.pid:
                log.warning("%s did not stop in time; killing it", slot.label)
                _kill(slot.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(slot.pid, 0)
                slot.pid = 0


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def _warn_per_worker_limits(config: Config, workers: int) -> None:
    """Say, at start and at each reload, which rate limits count in each worker: with N workers a
    client whose connections land on different workers gets up to N times the limit."""
    if workers < 2:
        return
    for name, policy in config.policies.items():
        limit = policy.rate_limit
        if limit is not None and limit.store == "local":
            log.warning(
                "rate limit %r counts in each of the %d workers (store: local): a client may get "
                "up to %d times %d requests per %gs; store: redis shares the counts",
                name,
                workers,
                workers,
                limit.requests,
                limit.per,
            )

