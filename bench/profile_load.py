#!/usr/bin/env python3
"""Where a real `portway run` spends its time under wrk load: py-spy, summarized by function.

Starts the fast nginx backend (pinned with wrk to CPU 0), one Portway worker with the benchmark's
default config (JSON access log to a file, metrics on; pinned to CPU 1), loads it with wrk and
samples it with py-spy meanwhile. Prints self and inclusive time per function, per thread, and
the share spent outside Python frames (uvloop, httptools, the interpreter; with --native, named).
    .venv/bin/python bench/profile_load.py [--conns 50] [--duration 10] [--native] [--compiled]
Needs py-spy in the project's venv (`.venv/bin/pip install py-spy`, a dev tool, not a dependency)
and permission to ptrace the worker (root, or kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h


def summarize(raw: Path, top: int) -> str:
    selfs: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        names = [_function(f) for f in frames if not f.startswith(("thread (", "process "))]
        if not names:
            names = ["(no Python frame)"]
        threads[_thread_label(frames)] += n
        selfs[names[-1]] += n
        for name in set(names):
            inclusive[name] += n
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "by thread:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in threads.most_common()]
    lines += ["", "self time (innermost frame):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in selfs.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def _function(frame: str) -> str:
    match = re.match(r"(.*) \((.+?)(?::\d+)?\)$", frame)
    if not match:
        return frame
    func, path = match.group(1), match.group(2)
    path = "portway/" + path.split("/portway/", 1)[1] if "/portway/" in path else Path(path).name
    return f"{func} ({path})"


def _thread_label(frames: list[str]) -> str:
    for frame in frames[:4]:
        if frame.startswith("thread ("):
            return frame.split(": ", 1)[1] if ": " in frame else frame
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    parser.add_argument("--no-access-log", dest="access_log", action="store_false")
    parser.add_argument(
        "--raw", type=Path, help="keep py-spy's raw stacks here (flamegraph.pl input)"
    )
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--compiled", action="store_true", help="the mypyc build (build_compiled.sh)"
    )
    parser.add_argument(
        "--perf",
        action="store_true",
        help="sample the worker with Linux perf instead of py-spy (C symbols: uvloop, httptools, "
        "the compiled modules, the kernel)",
    )
    parser.add_argument(
        "--perf-graph",
        action="store_true",
        help="with --perf: record call graphs (DWARF unwinding; keep --raw to read callers with "
        "perf report --children)",
    )
    parser.add_argument("--gen-cpus", default="0")
    parser.add_argument("--proxy-cpus", default="1")
    args = parser.parse_args()
    if not args.perf and not h.PY_SPY.exists():
        sys.exit(f"py-spy is not installed: {h.REPO}/.venv/bin/pip install py-spy")
    h.raise_nofile(65536)
    env = {}
    if args.compiled:
        env["PYTHONPATH"] = subprocess.run(
            [str(h.BENCH / "build_compiled.sh")], check=True, capture_output=True, text=True
        ).stdout.strip()
    with h.run_dir() as run:
        backend, backend_port = h.start_backend(run, args.gen_cpus)
        port = h.free_port()
        config = h.write_config(
            run, f"127.0.0.1:{port}", f"127.0.0.1:{backend_port}", access_log=args.access_log
        )
        portway = None
        try:
            portway = h.start_portway(config, port, run, cpus=args.proxy_cpus, env=env)
            workers = h.children(portway.pid)
            print(f"# {h.machine()}; worker pids {workers}", file=sys.stderr)
            h.wrk(port, args.conns, 2, args.gen_cpus)  # warm-up
            raw = args.raw or run / "profile.raw"
            if args.perf:
                _perf_profile(port, workers, raw, args)
                return
            argv = [
                str(h.PY_SPY),
                "record",
                "--pid",
                str(portway.pid),
                "--subprocesses",
                "--rate",
                str(args.rate),
                "--duration",
                str(int(args.duration)),
                "--format",
                "raw",
                "--output",
                str(raw),
                "--threads",
                "--full-filenames",
            ]
            # --native needs to stop the process for each sample; without it py-spy does not
            argv.append("--native" if args.native else "--nonblocking")
            spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.5)
            before = h.cpu_seconds(workers)
            result = h.wrk(port, args.conns, args.duration, args.gen_cpus)
            after = h.cpu_seconds(workers)
            _, err = spy.communicate(timeout=args.duration + 60)
            requests = result["requests"] or 1
            usr, sys_ = after[0] - before[0], after[1] - before[1]
            print(
                f"wrk -c{args.conns} {args.duration:g}s: {result['rps']:.0f} req/s, errors "
                f"{result['errors']:.0f}; worker CPU {1e6 * (usr + sys_) / requests:.1f} µs/req "
                f"({1e6 * usr / requests:.1f} usr + {1e6 * sys_ / requests:.1f} sys; sampling "
                "adds a little)"
            )
            if not raw.exists():
                sys.exit("py-spy wrote nothing: " + err.decode(errors="replace")[-2000:])
            print(summarize(raw, args.top))
        finally:
            if portway is not None:
                portway.stop()
            backend.stop()


def _perf_profile(port: int, workers: list[int], raw: Path, args: argparse.Namespace) -> None:
    """``perf record`` on the worker while wrk loads it; self time per symbol (user and kernel)."""
    argv = ["perf", "record", "-e", "cpu-clock", "-F", "2000", "-o", str(raw)]
    if args.perf_graph:
        argv += ["--call-graph", "dwarf,32768"]
    argv += ["-p", ",".join(map(str, workers)), "--", "sleep", str(args.duration)]
    perf = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.3)
    before = h.cpu_seconds(workers)
    result = h.wrk(port, args.conns, max(1, int(args.duration) - 1), args.gen_cpus)
    after = h.cpu_seconds(workers)
    perf.communicate(timeout=args.duration + 60)
    requests = result["requests"] or 1
    usr, sys_ = after[0] - before[0], after[1] - before[1]
    print(
        f"wrk -c{args.conns}: {result['rps']:.0f} req/s, errors {result['errors']:.0f}; worker CPU "
        f"{1e6 * (usr + sys_) / requests:.1f} µs/req ({1e6 * usr / requests:.1f} usr + "
        f"{1e6 * sys_ / requests:.1f} sys)"
    )
    for sort in ("dso", "dso,symbol"):
        report = subprocess.run(
            ["perf", "report", "-i", str(raw), "--no-children", "--sort", sort, "--stdio"],
            capture_output=True,
            text=True,
        ).stdout
        rows = [line for line in report.splitlines() if line.strip() and not line.startswith("#")]
        print(f"\nself time by {sort}:")
        print("\n".join(rows[: args.top]))


if __name__ == "__main__":
    main()
