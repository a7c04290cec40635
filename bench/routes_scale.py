#!/usr/bin/env python3
"""Config scale: 10 vs 10,000 routes, in one run.

For each route count it reports
* load: reading and validating the YAML file (``load_config``),
* compile + swap: ``Gateway.reload`` of that config in a running worker's gateway (services
  assembled, the route table compiled, the snapshot swapped) and ``compile_routes`` alone,
* reload end to end: a real ``portway run`` serving the config, the file edited (one route added),
  SIGHUP, until the new route answers (supervisor and worker both load the file),
* per-request cost: µs of Python per proxied request in the in-memory harness of
  micro_hotpath.py, the request matching a route in the middle of the table, and (``--wrk``) req/s
  and CPU µs per request of a pinned ``portway run`` under wrk.
Routes are Prefix routes spread over hosts (100 per host, as an ingress with many apps has), every
tenth an Exact route; regex routes are tried one by one by design and are left out.
    .venv/bin/python bench/routes_scale.py [--counts 10,10000] [--wrk] [--compiled]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h

PER_HOST = 100


def route_config(count: int) -> dict[str, Any]:
    """``count`` routes: route i is host app<i // 100>.example.com, /svc<i>/ (Exact every 10th)."""
    routes: list[dict[str, Any]] = []
    for i in range(count):
        exact = i % 10 == 9
        routes.append(
            {
                "name": f"r{i}",
                "hosts": [f"app{i // PER_HOST}.example.com"],
                "path": f"/svc{i}/exact" if exact else f"/svc{i}/",
                "path_type": "exact" if exact else "prefix",
                "service": "bench",
            }
        )
    routes.append({"name": "default", "path": "/", "service": "bench"})
    return {"routes": routes}


def target(count: int) -> tuple[str, str]:
    """Host and path of a request matching a Prefix route in the middle of the table."""
    i = count // 2
    if i % 10 == 9:
        i -= 1
    return f"app{i // PER_HOST}.example.com", f"/svc{i}/users/42"


def yaml_text(count: int, listen: str, backend: str, log: str, extra: int | None = None) -> str:
    """The config file; with ``extra``, one more route, to a service without a live instance (so
    that its 502 tells when the reload took effect)."""
    lines = [
        f'listeners:\n  - address: "{listen}"',
        f'services:\n  bench:\n    instances: ["{backend}"]\n    pool:\n      max_idle: 200',
        '  gone:\n    instances: ["127.0.0.1:1"]',
        f'server:\n  access_log: {{path: "{log}"}}',
        "routes:",
    ]
    for route in route_config(count)["routes"][:-1]:  # the default route goes last, below
        lines.append(
            f'  - {{name: {route["name"]}, hosts: ["{route["hosts"][0]}"], path: "{route["path"]}",'
            f" path_type: {route['path_type']}, service: bench}}"
        )
    if extra is not None:
        lines.append(f'  - {{name: added, path: "/added{extra}/", service: gone}}')
    lines.append('  - {name: default, path: "/", service: bench}')  # any other host and path
    return "\n".join(lines) + "\n"


def in_process(count: int, requests: int, rounds: int) -> dict[str, float]:
    from micro_hotpath import default_config, measure, portway_pair

    from portway.config.loader import load_config
    from portway.gateway import Gateway, new_event_loop
    from portway.messages import Request
    from portway.routing import compile_routes

    result: dict[str, float] = {}
    with h.run_dir() as run:
        path = run / "config.yaml"
        path.write_text(yaml_text(count, "127.0.0.1:0", "127.0.0.1:9", os.devnull))
        started = time.perf_counter()
        config = load_config(path)
        result["load_s"] = time.perf_counter() - started
        path.write_text(yaml_text(count, "127.0.0.1:0", "127.0.0.1:9", os.devnull, extra=1))
        changed = load_config(path)
    loop = new_event_loop()
    gateway = Gateway(config, loop)
    started = time.perf_counter()
    gateway.reload(changed)
    result["reload_s"] = time.perf_counter() - started
    started = time.perf_counter()
    compile_routes(changed.routes, gateway.snapshot.services)
    result["compile_s"] = time.perf_counter() - started
    loop.close()
    data = default_config()
    data.update(route_config(count))
    host, path_ = target(count)
    request = f"GET {path_} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
    one, tidy, client_out, _, gw = portway_pair(data, request.encode())
    one()
    assert client_out[-1].startswith(b"HTTP/1.1 200"), client_out[-1][:80]
    result["us_per_request"] = measure(one, tidy, requests, rounds)[0]
    table = gw.snapshot.routes
    req = Request("GET", host, path_, "", [])
    expected = f"r{int(path_.split('/')[1][3:])}"
    assert table.select(req).name == expected
    started = time.perf_counter()
    for _ in range(100_000):
        table.select(req)
    result["select_us"] = (time.perf_counter() - started) / 100_000 * 1e6
    return result


def end_to_end(count: int, env: dict[str, str], wrk: bool, seconds: float) -> dict[str, float]:
    result: dict[str, float] = {}
    with h.run_dir() as run:
        backend, backend_port = h.start_backend(run, "0")
        port = h.free_port()
        config = run / "portway.yaml"
        listen, upstream = f"127.0.0.1:{port}", f"127.0.0.1:{backend_port}"
        config.write_text(yaml_text(count, listen, upstream, f"{run}/access.log"))
        host, path = target(count)
        portway = h.start_portway(config, port, run, cpus="1", env=env)
        try:
            if wrk:
                workers = h.children(portway.pid)
                script = run / "host.lua"
                script.write_text(f'wrk.headers["Host"] = "{host}"\n')
                _wrk(port, path, 50, 1.0, script)
                before = h.cpu_seconds(workers)
                answer = _wrk(port, path, 50, seconds, script)
                after = h.cpu_seconds(workers)
                requests = answer["requests"] or 1
                result["rps"] = answer["rps"]
                result["errors"] = answer["errors"]
                result["cpu_us"] = 1e6 * (sum(after) - sum(before)) / requests
            config.write_text(yaml_text(count, listen, upstream, f"{run}/access.log", extra=2))
            started = time.perf_counter()
            os.kill(portway.pid, signal.SIGHUP)
            result["sighup_s"] = float("nan")
            while time.perf_counter() - started < 60:
                try:
                    urllib.request.urlopen(f"http://{listen}/added2/x", timeout=2).close()
                except urllib.error.HTTPError as exc:
                    if exc.code == 502:  # routed to the new route's service: the reload is live
                        result["sighup_s"] = time.perf_counter() - started
                        break
                except OSError:
                    pass
                time.sleep(0.005)
        finally:
            portway.stop()
            backend.stop()
    return result


def _wrk(port: int, path: str, conns: int, seconds: float, script: Path) -> dict[str, float]:
    argv = ["taskset", "-c", "0", "wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "-s", str(script)]
    out = subprocess.run(
        [*argv, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "requests": float(total.group(1)) if total else 0.0,
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10,10000")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--wrk", action="store_true", help="also load a real portway run")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of wrk per count")
    parser.add_argument(
        "--compiled", action="store_true", help="the mypyc build (build_compiled.sh)"
    )
    args = parser.parse_args()
    env: dict[str, str] = {}
    if args.compiled:
        folder = subprocess.run(
            [str(h.BENCH / "build_compiled.sh")], check=True, capture_output=True, text=True
        ).stdout.strip()
        env["PYTHONPATH"] = folder
        sys.path.insert(0, folder)
    h.raise_nofile(65536)
    import micro_hotpath

    build = micro_hotpath.build_name()
    counts = [int(c) for c in args.counts.split(",")]
    rows = []
    for count in counts:
        row = in_process(count, args.requests, args.rounds)
        row.update(end_to_end(count, env, args.wrk, args.duration))
        rows.append((count, row))
    header = (
        "| routes | load YAML s | reload (compile + swap) s | compile_routes s | SIGHUP to served s "
        "| select µs | µs/request (in-memory) |"
        + (" req/s (wrk -c50) | CPU µs/req | errors |" if args.wrk else "")
    )
    print(f"Build: {build}; {h.machine()}\n")
    print(header)
    print("|---:" * (header.count("|") - 1) + "|")
    for count, row in rows:
        line = (
            f"| {count} | {row['load_s']:.3f} | {row['reload_s']:.3f} | {row['compile_s']:.3f} | "
            f"{row['sighup_s']:.2f} | {row['select_us']:.2f} | {row['us_per_request']:.2f} |"
        )
        if args.wrk:
            line += f" {row['rps']:.0f} | {row['cpu_us']:.1f} | {row['errors']:.0f} |"
        print(line)


if __name__ == "__main__":
    main()
