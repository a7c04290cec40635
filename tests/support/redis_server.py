"""A real ``redis-server`` for the tests: loopback only, a free port, no persistence, a temp dir.

Why a real one: what the shared rate limits must survive (connections refused, a server that stops
answering, a restart that lost every key) is the behaviour of the server and of redis-py's
connections, which a fake would only imitate. ``stop``/``start`` keep the port, so a client
configured with the URL sees an outage and then the same server address come back, empty (nothing
is saved). ``pause``/``resume`` (SIGSTOP/SIGCONT) make it accept but never answer: a slow Redis.
``scripts/install-test-deps`` installs Debian's ``redis-server``; without it the tests skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from tests.support.processes import free_port

START_TIMEOUT = 10.0


def redis_server_binary() -> str:
    """The ``redis-server`` on PATH; skips the calling test when there is none."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (scripts/install-test-deps installs it)")
    return binary


def ping(port: int, timeout: float = 1.0) -> bool:
    """Whether a Redis answers PING on 127.0.0.1:``port`` within ``timeout``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process, restartable on the same port."""

    def __init__(self) -> None:
        self.binary = redis_server_binary()
        self.port = free_port()
        self._folder = tempfile.TemporaryDirectory(prefix="portway-redis-")
        self.folder = Path(self._folder.name)
        self.log_path = self.folder / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it answers PING."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("redis-server is already running")
        argv = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.folder),
            "--save", "",  # no RDB snapshots
            "--appendonly", "no",  # no AOF: a restart loses every key, as an outage may
            "--daemonize", "no",
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not ping(self.port, 0.2):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.proc.returncode}:\n{self.log_text()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"redis-server did not answer in {START_TIMEOUT}s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill the server (an abrupt outage: no goodbye to clients) and reap it."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)  # a paused server could not exit otherwise
                proc.kill()
            proc.wait(10)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but nothing is answered."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def command(self, *args: str) -> bytes:
        """One command in the inline protocol, the raw reply (tests read keys with it)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as sock:
            sock.sendall(" ".join(args).encode() + b"\r\n")
            reply = b""
            while not reply.endswith(b"\r\n") or (
                reply.startswith(b"$") and reply.count(b"\r\n") < 2 and not reply.startswith(b"$-1")
            ):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
            return reply

    def get_int(self, key: str) -> int | None:
        """The integer value of ``key``, None when absent."""
        reply = self.command("GET", key)
        if reply.startswith(b"$-1"):
            return None
        return int(reply.split(b"\r\n")[1])

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        self._folder.cleanup()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A started server for the block (skips when ``redis-server`` is not installed)."""
    with RedisServer() as server:
        yield server
