#!/usr/bin/env python3
"""Fault injection under load: instances crash, answer 503 or hang while clients keep sending GETs.

Starts ``--instances`` real backends (``python -m tests.support.flaky`` subprocesses, each on a
fixed port so that it can be killed and started again), a real ``portway run --workers N`` with
health checks, outlier detection, retries and timeouts configured, and ``--clients`` client threads
sending GETs over keep-alive connections for ``--duration`` seconds. Meanwhile a schedule injects
faults, one cycle every ``--cycle`` seconds:

* at the start of cycle k, instance k mod N is killed (SIGKILL) and started again ``--down`` s later;
* one second later, instance k+1 mod N answers 503 (even cycles) or hangs (odd cycles) until the
  kill ends.

At the end it prints requests sent / succeeded / failed by cause (status and ``portway-error``; a
5xx without one came from an instance) and a table per phase (between two schedule events).
Not run in CI.

    .venv/bin/python bench/fault_injection.py --duration 20
    .venv/bin/python bench/fault_injection.py                   # 60 s, the default
    .venv/bin/python bench/fault_injection.py --json out.json   # also the raw numbers
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.support: the flaky backend, the load loop, run_portway

from tests.support.client import request  # noqa: E402
from tests.support.load import Load, Outcome  # noqa: E402
from tests.support.processes import free_port, run_portway  # noqa: E402

WARMUP = 2.0
LEVELS = ("WARNING", "ERROR", "CRITICAL", "Traceback")


# ---------------------------------------------------------------------------------- instances


class Instance:
    """One flaky backend process on a fixed port: killed and started again by the schedule."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [sys.executable, "-m", "tests.support.flaky"]
        argv += ["--port", str(self.port), "--name", self.name]
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        for attempt in range(50):  # the port may take a moment to be free again after a kill
            proc = subprocess.Popen(
                argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.startswith(b"ready"):
                self.proc = proc
                return
            proc.wait()
            time.sleep(0.05 * (attempt + 1))
        raise RuntimeError(f"instance {self.name} could not listen on {self.port} again")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def control(self, **settings: object) -> None:
        """Change how the instance answers (status, delay, mode), straight to its port."""
        query = "&".join(f"{k}={v}" for k, v in settings.items())
        response = request(self.port, "GET", f"/_flaky?{query}", timeout=5)
        if response.status != 200:
            raise RuntimeError(f"{self.name}: control {query} answered {response.status}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@contextlib.contextmanager
def instances(count: int) -> Iterator[list[Instance]]:
    started = [Instance(f"i{k}") for k in range(count)]
    try:
        for instance in started:
            instance.start()
        yield started
    finally:
        for instance in started:
            instance.stop()


def gateway_config(addresses: list[str], *, health_checks: bool) -> str:
    health = (
        "    health_check: {path: /healthz, interval: 1s, timeout: 0.5s,"
        " healthy_threshold: 2, unhealthy_threshold: 2}\n"
        if health_checks
        else ""
    )
    instance_list = ", ".join(f'"{a}"' for a in addresses)
    return (
        'listeners: [{address: "127.0.0.1:0"}]\n'
        "services:\n"
        "  app:\n"
        f"    instances: [{instance_list}]\n"
        "    connect_timeout: 0.5s\n"
        "    try_timeout: 1s\n"
        "    request_timeout: 5s\n"
        f"{health}"
        "    outlier_detection: {consecutive_5xx: 3, consecutive_connect_failures: 1,"
        " base_ejection_time: 2s, max_ejection_percent: 50}\n"
        "    retries: {attempts: 2}\n"
        "routes: [{path: /, service: app}]\n"
    )


# ----------------------------------------------------------------------------------- schedule


@dataclass(order=True)
class Event:
    at: float  # seconds since the load started
    action: str = field(compare=False)  # kill, start, 503, hang, healthy
    instance: int = field(compare=False)


def schedule(duration: float, count: int, cycle: float, down: float) -> list[Event]:
    events: list[Event] = []
    k = 0
    while WARMUP + k * cycle < duration:
        start = WARMUP + k * cycle
        victim, other = k % count, (k + 1) % count
        events.append(Event(start, "kill", victim))
        events.append(Event(start + down, "start", victim))
        if count > 1 and down > 1:
            events.append(Event(start + 1, "503" if k % 2 == 0 else "hang", other))
            events.append(Event(start + down, "healthy", other))
        k += 1
    return sorted(e for e in events if e.at < duration)


@dataclass
class Phase:
    start: float
    end: float
    faults: str


def apply(event: Event, instance: Instance) -> None:
    if event.action == "kill":
        instance.kill()
    elif event.action == "start":
        instance.start()
    elif event.action == "503":
        instance.control(status=503, mode="answer", delay=0)
    elif event.action == "hang":
        instance.control(mode="hang")
    elif instance.proc is not None:  # healthy again (a killed one restarts healthy anyway)
        instance.control(status=200, mode="answer", delay=0)


def run_schedule(
    events: list[Event],
    pool: list[Instance],
    origin: float,
    duration: float,
    stopping: threading.Event,
    phases: list[Phase],
) -> None:
    """Apply the events at their times; phases[] gets one entry per fault state."""
    state: dict[int, str] = {}

    def label() -> str:
        faults = [f"{pool[i].name} {what}" for i, what in sorted(state.items())]
        return ", ".join(faults) or "none"

    phase_start = 0.0
    times = sorted({event.at for event in events})
    for at in times:  # events due at the same time are applied together: one phase boundary
        delay = origin + at - time.monotonic()
        if delay > 0 and stopping.wait(delay):
            break
        now = time.monotonic() - origin
        if now > phase_start:
            phases.append(Phase(phase_start, now, label()))
            phase_start = now
        for event in (e for e in events if e.at == at):
            apply(event, pool[event.instance])
            if event.action in ("kill", "503", "hang"):
                state[event.instance] = {"kill": "down", "503": "503", "hang": "hangs"}[
                    event.action
                ]
            else:
                state.pop(event.instance, None)
    stopping.wait(max(0.0, origin + duration - time.monotonic()))
    phases.append(Phase(phase_start, duration, label()))


# ------------------------------------------------------------------------------------ report


def cause_of(outcome: Outcome) -> str:
    if outcome.status == 0:
        return f"no answer ({outcome.cause})"
    if outcome.cause:
        return f"{outcome.status} {outcome.cause}"
    return f"{outcome.status} from the instance"


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class Summary:
    sent: int
    succeeded: int
    failed_by_cause: dict[str, int]
    answered_by: dict[str, int]
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def failed(self) -> int:
        return self.sent - self.succeeded


def summarize(outcomes: list[Outcome]) -> Summary:
    failed = [o for o in outcomes if not o.ok]
    latencies = [(o.finished - o.started) * 1000 for o in outcomes]
    return Summary(
        sent=len(outcomes),
        succeeded=len(outcomes) - len(failed),
        failed_by_cause=dict(Counter(cause_of(o) for o in failed).most_common()),
        answered_by=dict(sorted(Counter(o.backend or "-" for o in outcomes if o.ok).items())),
        p50_ms=round(statistics.median(latencies), 2) if latencies else 0.0,
        p99_ms=round(percentile(latencies, 0.99), 2),
        max_ms=round(max(latencies), 2) if latencies else 0.0,
    )


def report(
    outcomes: list[Outcome], phases: list[Phase], origin: float, args: argparse.Namespace
) -> dict[str, object]:
    total = summarize(outcomes)
    print(
        f"\nfault injection: {args.instances} instances, portway --workers {args.workers}, "
        f"{args.clients} clients, {args.duration:g} s"
        f"{'' if args.health_checks else ', no health checks'}"
    )
    share = 100.0 * total.succeeded / total.sent if total.sent else 0.0
    print(
        f"requests sent {total.sent}, succeeded {total.succeeded} ({share:.2f}%), "
        f"failed {total.failed}"
    )
    print(f"latency ms: p50 {total.p50_ms}, p99 {total.p99_ms}, max {total.max_ms}")
    if total.failed_by_cause:
        print("failed by cause:")
        for cause, count in total.failed_by_cause.items():
            print(f"  {count:>7}  {cause}")
    print(f"answered by: {total.answered_by}")
    print("\nper phase (t in seconds since the load started):")
    header = f"{'from':>6} {'to':>6}  {'faults':<24} {'sent':>7} {'ok':>7} {'failed':>6}"
    print(f"{header} {'req/s':>6} {'p99 ms':>8}  failures")
    rows: list[dict[str, object]] = []
    for phase in phases:
        inside = [o for o in outcomes if phase.start <= o.started - origin < phase.end]
        summary = summarize(inside)
        rate = summary.sent / max(phase.end - phase.start, 1e-9)
        causes = summary.failed_by_cause
        failures = ", ".join(f"{count} {cause}" for cause, count in causes.items()) or "-"
        print(
            f"{phase.start:6.1f} {phase.end:6.1f}  {phase.faults:<24} {summary.sent:>7} "
            f"{summary.succeeded:>7} {summary.failed:>6} {rate:6.0f} {summary.p99_ms:>8}  "
            f"{failures}"
        )
        rows.append({**vars(phase), **vars(summary), "failed": summary.failed})
    seconds: list[dict[str, object]] = []
    for second in range(int(args.duration + 0.999)):
        inside = [o for o in outcomes if second <= o.started - origin < second + 1]
        summary = summarize(inside)
        seconds.append({"second": second, **vars(summary), "failed": summary.failed})
    if args.timeline:
        print("\nper second: sent/failed")
        cells = [f"{row['second']:>3}s {row['sent']:>5}/{row['failed']:<4}" for row in seconds]
        for start in range(0, len(cells), 6):
            print("  " + "  ".join(cells[start : start + 6]))
    return {
        "total": {**vars(total), "failed": total.failed},
        "phases": rows,
        "seconds": seconds,
    }


def access_log_failures(log: list[str]) -> Counter[str]:
    """JSON access-log lines (when the gateway writes them) of answers >= 500, tallied."""
    tally: Counter[str] = Counter()
    for line in log:
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and int(entry.get("status", 0)) >= 500:
            cause = entry.get("cause") or "from the instance"
            tally[f"{entry['status']} {cause}, retries {entry.get('retries', '?')}"] += 1
    return tally


# -------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (60)")
    parser.add_argument("--instances", type=int, default=4, help="backend instances (4)")
    parser.add_argument("--clients", type=int, default=8, help="client threads (8)")
    parser.add_argument("--workers", type=int, default=2, help="portway --workers (2)")
    parser.add_argument("--cycle", type=float, default=8.0, help="seconds between kills (8)")
    parser.add_argument("--down", type=float, default=5.0, help="seconds a killed one is down (5)")
    parser.add_argument(
        "--no-health-checks",
        dest="health_checks",
        action="store_false",
        help="leave active health checks out of the config (passive outlier detection only)",
    )
    parser.add_argument("--timeline", action="store_true", help="also print a per-second table")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    if args.instances < 2:
        parser.error("--instances must be at least 2 (one must stay healthy)")

    events = schedule(args.duration, args.instances, args.cycle, args.down)
    with instances(args.instances) as pool:
        config = gateway_config([i.address for i in pool], health_checks=args.health_checks)
        with run_portway(config, workers=args.workers) as gateway:
            print(f"portway on port {gateway.port}, instances {[i.address for i in pool]}")
            print(f"{len(events)} fault events over {args.duration:g} s; load running...")
            stopping = threading.Event()
            phases: list[Phase] = []
            load = Load(gateway.port, clients=args.clients, timeout=10.0)
            origin = time.monotonic()
            load.start()
            try:
                run_schedule(events, pool, origin, args.duration, stopping, phases)
            except KeyboardInterrupt:
                stopping.set()
                phases.append(Phase(phases[-1].end if phases else 0.0, args.duration, "stopped"))
            finally:
                outcomes = load.stop()
            if gateway.proc.poll() is not None:
                print(f"portway exited early ({gateway.proc.returncode}):\n{gateway.stderr_text()}")
            log = gateway.stderr_text().splitlines()
    messages = [line for line in log if not line.startswith("{")]  # not JSON access-log lines
    levels = Counter(level for line in messages for level in LEVELS if level in line)
    print(f"\nportway log: {len(messages)} messages, {dict(levels) or 'no warnings or errors'}")
    for line in [line for line in messages if any(level in line for level in LEVELS)][:12]:
        print(f"  {line[:160]}")
    gateway_failures = access_log_failures(log)
    if gateway_failures:
        print("gateway access log, answers >= 500 by status, cause and retries made:")
        for key, count in gateway_failures.most_common(12):
            print(f"  {count:>7}  {key}")
    numbers = report(outcomes, phases, origin, args)
    if args.json is not None:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, **numbers}))
        print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
