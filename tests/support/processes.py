"""Starting the real gateway as a subprocess, and looking at processes through /proc.

``run_portway`` starts ``python -m portway run`` in its own process group so that the gateway and
every worker it forks are stopped together, by that group's id and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

READY_PATTERN = re.compile(r"listening on http://(\[[^\]]+\]|[^\s:/]+):(\d+)")
# Printed by the supervisor before its "listening on" lines, so it is read by the time a test runs.
ADMIN_PATTERN = re.compile(r"admin on http://(\[[^\]]+\]|[^\s:/]+):(\d+) \(pid (\d+)\)")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (``VmRSS`` in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected VmRSS unit {unit!r} for pid {pid}")
            return int(value) * 1024
    raise ValueError(f"no VmRSS for pid {pid} (a kernel thread or a zombie?)")


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (bound, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def process_group_pids(pgid: int) -> list[int]:
    """Every live process whose process group is ``pgid``, from /proc/PID/stat."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited while we looked
        # The command name may hold spaces and parentheses; the fields after the last ")" do not.
        fields = stat[stat.rindex(")") + 2 :].split()
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            pids.append(int(entry))
    return sorted(pids)


class PortwayProcess:
    """A running gateway: its port, its process, and what it has written so far."""

    def __init__(self, proc: subprocess.Popen[bytes], config_path: Path) -> None:
        self.proc = proc
        self.config_path = config_path
        self.host = ""
        self.port = 0  # the first address announced; all of them are in ``listening``
        self.listening: list[tuple[str, int]] = []
        self.admin_host = ""
        self.admin_port = 0  # 0: no admin listener announced
        self.admin_pid = 0  # the admin process as started (it may be restarted since)
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self._ready = threading.Event()
        self._lines_changed = threading.Condition()
        self._readers = [
            self._start_reader(proc.stderr, self.stderr_lines, look_for_ready=True),
            self._start_reader(proc.stdout, self.stdout_lines, look_for_ready=False),
        ]

    @property
    def pgid(self) -> int:
        # start_new_session: the child leads a new process group whose id is its pid.
        return self.proc.pid

    def pids(self) -> list[int]:
        """The pids of the gateway's process group (the master, its workers, prober and admin)."""
        return process_group_pids(self.pgid)

    def worker_pids(self) -> list[int]:
        """The group's pids but the supervisor's and the admin process's (workers and prober)."""
        return [p for p in self.pids() if p not in (self.proc.pid, self.admin_pid)]

    @property
    def admin_url(self) -> str:
        if not self.admin_port:
            raise RuntimeError("this gateway announced no admin listener")
        host = f"[{self.admin_host}]" if ":" in self.admin_host else self.admin_host
        return f"http://{host}:{self.admin_port}"

    def stderr_text(self) -> str:
        with self._lines_changed:
            return "\n".join(self.stderr_lines)

    def wait_for_stderr(self, pattern: str, timeout: float = 5.0) -> re.Match[str]:
        """The first match of ``pattern`` in a stderr line, waiting for it to be written."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._lines_changed:
            while True:
                for line in self.stderr_lines:
                    match = regex.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"no stderr line matched {pattern!r} in {timeout}s; stderr:\n"
                        + "\n".join(self.stderr_lines)
                    )
                self._lines_changed.wait(remaining)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None:
                self._join_readers()
                raise RuntimeError(
                    f"portway exited with status {self.proc.returncode} before listening; "
                    f"stderr:\n{self.stderr_text()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"portway printed no 'listening on http://HOST:PORT' in {timeout}s; "
                    f"stderr:\n{self.stderr_text()}"
                )

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM the group, wait for a drained exit, SIGKILL the group after ``timeout``.

        Returns the main process's exit status (negative: killed by that signal).
        """
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait()
        # Workers outlive a master that died without reaping them; they must not leak into the
        # next test.
        if self.pids():
            self._signal_group(signal.SIGKILL)
        self._join_readers()
        return self.proc.returncode

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signum)

    def _start_reader(
        self, stream: IO[bytes] | None, lines: list[str], *, look_for_ready: bool
    ) -> threading.Thread:
        def read() -> None:
            if stream is None:
                return
            with stream:
                for raw in stream:
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    with self._lines_changed:
                        lines.append(line)
                        self._lines_changed.notify_all()
                    admin = ADMIN_PATTERN.search(line) if look_for_ready else None
                    if admin:
                        self.admin_host = admin.group(1).strip("[]")
                        self.admin_port, self.admin_pid = int(admin.group(2)), int(admin.group(3))
                    match = READY_PATTERN.search(line) if look_for_ready else None
                    if match:
                        self.listening.append((match.group(1).strip("[]"), int(match.group(2))))
                        if not self._ready.is_set():
                            self.host, self.port = self.listening[0]
                            self._ready.set()

        thread = threading.Thread(target=read, name=f"portway-{self.proc.pid}-reader", daemon=True)
        thread.start()
        return thread

    def _join_readers(self) -> None:
        for thread in self._readers:
            thread.join(5.0)


@contextlib.contextmanager
def run_portway(
    config_text: str,
    *,
    workers: int = 1,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    start_timeout: float = START_TIMEOUT,
    admin: str | None = "127.0.0.1:0",
) -> Iterator[PortwayProcess]:
    """Run ``python -m portway run --config F --workers N`` until the block ends.

    ``admin`` is passed as ``--admin`` (unless ``extra_args`` has one): an ephemeral port by
    default, so tests running side by side never contend for the documented 9901; None passes
    nothing (the config decides). Yields once the gateway has printed its ``listening on
    http://HOST:PORT`` line. On leaving the block the process group gets SIGTERM, then SIGKILL if
    it has not exited within 15 s.
    """
    with tempfile.TemporaryDirectory(prefix="portway-test-") as folder:
        config_path = Path(folder) / "portway.yaml"
        config_path.write_text(config_text)
        argv = [
            sys.executable, "-m", "portway", "run",
            "--config", str(config_path), "--workers", str(workers), *extra_args,
        ]  # fmt: skip
        if admin is not None and "--admin" not in extra_args:
            argv += ["--admin", admin]
        child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env,
            cwd=folder,
            start_new_session=True,
        )
        gateway = PortwayProcess(proc, config_path)
        try:
            gateway.wait_ready(start_timeout)
            yield gateway
        finally:
            gateway.stop()


@contextlib.contextmanager
def run_portway_manifests(
    manifests: Path,
    *,
    workers: int = 1,
    extra_args: Sequence[str] = (),
    start_timeout: float = START_TIMEOUT,
) -> Iterator[PortwayProcess]:
    """Run ``python -m portway run --manifests DIR --workers N --admin none`` until the block
    ends, stopped as ``run_portway`` stops it; ``config_path`` is the manifest directory."""
    argv = [
        sys.executable, "-m", "portway", "run", "--manifests", str(manifests),
        "--workers", str(workers), "--admin", "none", *extra_args,
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=manifests.parent,
        start_new_session=True,
    )
    gateway = PortwayProcess(proc, manifests)
    try:
        gateway.wait_ready(start_timeout)
        yield gateway
    finally:
        gateway.stop()
