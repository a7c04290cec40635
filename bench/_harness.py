"""Small helpers the bench scripts share: an nginx backend, a `portway run`, wrk, /proc readings.

Everything started here runs in its own process group and is stopped by that group's id (SIGTERM,
then SIGKILL); nothing is looked up or killed by name. Only loopback addresses are used.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PORTWAY = REPO / ".venv" / "bin" / "portway"
PY_SPY = REPO / ".venv" / "bin" / "py-spy"

BACKEND_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {run}/backend.pid;
error_log {run}/backend.error.log warn;
worker_rlimit_nofile 40000;
events {{ worker_connections 30000; }}
http {{
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 10000000;
    client_body_temp_path {run}/tmp-body;
    proxy_temp_path {run}/tmp-proxy;
    fastcgi_temp_path {run}/tmp-fastcgi;
    uwsgi_temp_path {run}/tmp-uwsgi;
    scgi_temp_path {run}/tmp-scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        default_type text/plain;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-file limit (inherited by what it starts); the new soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            # root may raise the hard limit too
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Proc:
    """A child in its own process group, optionally pinned with taskset."""

    def __init__(
        self,
        argv: Sequence[str],
        log: Path,
        cpus: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        if cpus is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", cpus, *argv]
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(
            list(argv),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )

    @property
    def pid(self) -> int:
        return self.p.pid

    def stop(self, grace: float = 5.0) -> None:
        if self.p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        self._out.close()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_http(port: int, path: str = "/", timeout: float = 20.0, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.p.poll() is not None:
            raise RuntimeError(f"exited with {proc.p.returncode}:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"127.0.0.1:{port} did not answer 200 within {timeout}s: {last}")


@contextlib.contextmanager
def run_dir(keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="portway-bench-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def start_backend(run: Path, cpus: str | None = None) -> tuple[Proc, int]:
    """nginx answering `200 ok` on 127.0.0.1:PORT (the harness's fast backend)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    conf = run / "backend.conf"
    conf.write_text(BACKEND_CONF.format(run=run, port=port))
    proc = Proc([nginx, "-c", str(conf), "-p", str(run)], run / "backend.out", cpus)
    wait_http(port, proc=proc)
    return proc, port


def write_config(
    run: Path,
    listen: str,
    backend: str,
    *,
    max_idle: int = 200,
    access_log: bool = True,
    routes: str | None = None,
    name: str = "portway.yaml",
) -> Path:
    """A config like bench/candidate.sh's default one: `/` to the backend, JSON access log."""
    log = (
        f'server:\n  access_log: {{path: "{run}/access.log"}}\n'
        if access_log
        else ("server:\n  access_log: {enabled: false}\n")
    )
    text = (
        f'listeners:\n  - address: "{listen}"\n'
        f'services:\n  bench:\n    instances: ["{backend}"]\n    pool:\n      max_idle: {max_idle}\n'
        + (routes or "routes:\n  - path: /\n    service: bench\n")
        + log
    )
    path = run / name
    path.write_text(text)
    return path


def start_portway(
    config: Path,
    port: int,
    run: Path,
    *,
    workers: int = 1,
    cpus: str | None = None,
    env: dict[str, str] | None = None,
    ready_path: str = "/",
) -> Proc:
    portway = str(PORTWAY) if PORTWAY.exists() else "portway"
    argv = [portway, "run", "--config", str(config), "--workers", str(workers), "--admin", "none"]
    proc = Proc(argv, run / f"portway-{port}.out", cpus, env)
    wait_http(port, ready_path, proc=proc)
    return proc


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/PID/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        kids = children(current)
        out += kids
        todo += kids
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def memory_kib(pid: int) -> dict[str, int]:
    """rss / pss / uss (private) of a process, KiB, from /proc/PID/smaps_rollup."""
    values: dict[str, int] = {}
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    for key in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
        match = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        values[key] = int(match.group(1)) if match else 0
    return {
        "rss": values["Rss"],
        "pss": values["Pss"],
        "uss": values["Private_Clean"] + values["Private_Dirty"],
    }


def cpu_seconds(pids: Sequence[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pids`` (threads included)."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            user += int(fields[11]) / tick
            system += int(fields[12]) / tick
    return user, system


def wrk(
    port: int, conns: int, duration: float, cpus: str | None = None, path: str = "/"
) -> dict[str, float]:
    """Run wrk; requests/s, total requests, socket errors and non-2xx."""
    argv = [
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{duration:g}s",
        "--latency",
        f"http://127.0.0.1:{port}{path}",
    ]
    if cpus is not None and shutil.which("taskset"):
        argv = ["taskset", "-c", cpus, *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    result: dict[str, float] = {"errors": 0.0}
    match = re.search(r"(\d+) requests in", out)
    result["requests"] = float(match.group(1)) if match else 0.0
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["rps"] = float(match.group(1)) if match else 0.0
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if match:
        result["errors"] += float(match.group(1))
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if match:
        result["errors"] += sum(float(g) for g in match.groups())
    for label in ("50", "99"):
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        if match:
            scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]
            result[f"p{label}_ms"] = float(match.group(1)) * scale
    return result


def machine() -> str:
    cpus = os.cpu_count()
    model = ""
    with contextlib.suppress(OSError):
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        model = match.group(1) if match else ""
    load = os.getloadavg()
    return (
        f"{cpus} CPUs ({model}), Python {sys.version.split()[0]}, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
