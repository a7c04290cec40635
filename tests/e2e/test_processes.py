"""The real ``portway run`` command: workers on one port, restarts, SIGTERM drain, reload, memory."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from tests.support.backends import Backend, refused_port
from tests.support.client import KeepAliveClient, request, stream_download, stream_upload
from tests.support.pattern import pattern_sha256
from tests.support.processes import rss_bytes, run_portway


def config_for(address: str, extra: str = "") -> str:
    return (
        'listeners: [{address: "127.0.0.1:0"}]\n'
        f'services:\n  web: {{instances: ["{address}"]}}\n'
        "routes:\n  - {path: /, service: web}\n" + extra
    )


def wait_for(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_workers_share_the_port_and_a_dead_worker_is_restarted() -> None:
    with Backend() as backend, run_portway(config_for(backend.address), workers=2) as gw:
        assert wait_for(lambda: len(gw.worker_pids()) == 2)
        workers = gw.worker_pids()
        # Every worker holds its own SO_REUSEPORT listening socket on the same port.
        for pid in workers:
            inodes = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
            assert any(i.startswith("socket:") for i in inodes)
        assert all(request(gw.port, "GET", f"/{i}").status == 200 for i in range(20))

        os.kill(workers[0], signal.SIGKILL)
        assert wait_for(lambda: len(gw.worker_pids()) == 2 and workers[0] not in gw.pids())
        gw.wait_for_stderr(rf"worker \d+ \(pid {workers[0]}\) exited \(killed by SIGKILL\)")
        gw.wait_for_stderr(r"worker \d+ restarted as pid")
        assert all(request(gw.port, "GET", f"/after/{i}").status == 200 for i in range(20))


def test_sigterm_drains_in_flight_requests_and_exits_zero() -> None:
    """Stop accepting, finish what is in flight, close idle keep-alive connections, exit 0."""
    with Backend() as backend, run_portway(config_for(backend.address), workers=1) as gw:
        idle = KeepAliveClient(gw.port)
        assert idle.request("GET", "/warm").status == 200
        busy = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        busy.sendall(b"GET /slow?delay=1.0 HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.3)  # the slow request is in flight
        started = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        assert idle.server_closed(3.0)  # idle keep-alive connection closed at once
        answer = b""
        while chunk := busy.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 OK")
        assert answer.endswith(b"slow")
        assert b"connection: close" in answer.lower()
        assert gw.proc.wait(10) == 0
        assert time.monotonic() - started < 5
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", gw.port), timeout=1)
        busy.close()
        idle.close()


def test_sighup_reloads_a_valid_config_and_keeps_serving_on_a_broken_one() -> None:
    with (
        Backend("one") as one,
        Backend("two") as two,
        run_portway(config_for(one.address), workers=2) as gw,
    ):
        assert request(gw.port, "GET", "/").json()["backend"] == "one"
        gw.config_path.write_text(config_for(two.address))
        gw.proc.send_signal(signal.SIGHUP)
        assert wait_for(
            lambda: all(request(gw.port, "GET", "/").json()["backend"] == "two" for _ in range(6))
        )
        gw.config_path.write_text("services: [this is not valid")
        gw.proc.send_signal(signal.SIGHUP)
        gw.wait_for_stderr(r"new config is invalid, nothing changes")
        assert all(request(gw.port, "GET", "/").json()["backend"] == "two" for _ in range(6))


def test_local_rate_limits_are_said_to_count_per_worker_at_start_and_reload() -> None:
    """With N workers a store: local limit lets a client through up to N times: said at start
    and after each reload, for local limits only (a shared one counts across workers)."""
    limits = (
        "policies:\n"
        "  tight: {rate_limit: {requests: 5, per: 1m}}\n"
        "  shared: {rate_limit: {requests: 7, per: 1s, store: redis}}\n"
        f'redis: {{url: "redis://127.0.0.1:{refused_port()}/0"}}\n'
    )
    warning = (
        r"rate limit 'tight' counts in each of the 2 workers \(store: local\): a client may get "
        r"up to 2 times 5 requests per 60s; store: redis shares the counts"
    )
    with Backend() as backend, run_portway(config_for(backend.address, limits), workers=2) as gw:
        gw.wait_for_stderr(warning)
        assert not any("'shared'" in line for line in gw.stderr_lines)
        gw.proc.send_signal(signal.SIGHUP)
        gw.wait_for_stderr(r"SIGHUP: config is valid")
        assert wait_for(lambda: sum("'tight' counts" in line for line in gw.stderr_lines) == 2)
    with Backend() as backend, run_portway(config_for(backend.address, limits), workers=1) as gw:
        assert not any("counts in each" in line for line in gw.stderr_lines)


def test_invalid_config_exits_non_zero_naming_the_problem() -> None:
    expected = r"(?s)status 1 .*routes\[0\]\.service.*unknown service 'nope'"
    with (
        pytest.raises(RuntimeError, match=expected),
        run_portway("routes:\n  - {path: /, service: nope}\n"),
    ):
        pass


def _sample_rss(pid: int, samples: list[int], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            samples.append(rss_bytes(pid))
        except (FileNotFoundError, ProcessLookupError):
            return
        time.sleep(0.05)


def test_one_gib_streams_both_ways_in_constant_memory() -> None:
    """A 1 GiB download and a 1 GiB upload pass with worker RSS growing by a few MB at most."""
    gib = 1 << 30
    extra = "server: {limits: {max_body_bytes: 0}}\n"
    with Backend() as backend, run_portway(config_for(backend.address, extra), workers=1) as gw:
        worker = gw.worker_pids()[0]
        assert request(gw.port, "GET", "/warm").status == 200
        baseline = rss_bytes(worker)
        samples: list[int] = []
        stop = threading.Event()
        sampler = threading.Thread(target=_sample_rss, args=(worker, samples, stop), daemon=True)
        sampler.start()
        try:
            head, received, digest = stream_download(gw.port, f"/stream?bytes={gib}&chunked=1")
            assert head.status == 200
            assert received == gib
            assert digest == pattern_sha256(gib)
            uploaded = stream_upload(gw.port, "/sink", gib, chunked=False)
            assert uploaded.status == 200
            assert uploaded.json()["body_bytes"] == gib
            assert uploaded.json()["body_sha256"] == pattern_sha256(gib)
        finally:
            stop.set()
            sampler.join()
    growth = max(samples) - baseline
    print(f"worker RSS baseline {baseline / 2**20:.1f} MiB, peak growth {growth / 2**20:.1f} MiB")
    assert growth < 16 * 2**20
