#!/usr/bin/env python3
"""Memory of one Portway worker: idle, then holding N idle keep-alive client connections.

Starts the fast nginx backend and `portway run --workers 1` (the benchmark's default config: JSON
access log, metrics), sends a few requests, reads the worker's memory (RSS, and PSS/USS: the
worker is forked from the supervisor, so part of its RSS is shared with it), then opens
``--connections`` client connections that each make one request and stay open idle, and reads it
again. The difference over N is the cost of an idle keep-alive connection. Raises the open-file
limit for itself and Portway (both ends hold N sockets). Not part of the test suite.
    .venv/bin/python bench/memory.py [--connections 10000] [--compiled] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h


async def _hold(port: int, count: int, concurrency: int = 400) -> list[asyncio.StreamWriter]:
    """``count`` connections that each made one GET and are left open."""
    gate = asyncio.Semaphore(concurrency)
    request = b"GET / HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: memory.py\r\n\r\n"

    async def one() -> asyncio.StreamWriter:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            return writer

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def _warm(port: int) -> None:
    for writer in await _hold(port, 20):
        writer.close()


def _read(pid: int) -> dict[str, int]:
    time.sleep(1.0)  # let the sweeper hand the access log over, the allocator settle
    return h.memory_kib(pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument(
        "--compiled", action="store_true", help="the mypyc build (build_compiled.sh)"
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    limit = h.raise_nofile(args.connections * 2 + 1000)
    if limit < args.connections + 500:
        sys.exit(f"the open-file limit is {limit}: too low for {args.connections} connections")
    env = {}
    build = "pure Python"
    if args.compiled:
        folder = subprocess.run(
            [str(h.BENCH / "build_compiled.sh")], check=True, capture_output=True, text=True
        ).stdout.strip()
        env["PYTHONPATH"] = folder
        build = "compiled (mypyc)"
    with h.run_dir() as run:
        backend, backend_port = h.start_backend(run)
        port = h.free_port()
        config = h.write_config(run, f"127.0.0.1:{port}", f"127.0.0.1:{backend_port}")
        portway = h.start_portway(config, port, run, env=env)
        try:
            (worker,) = h.children(portway.pid)
            supervisor = h.memory_kib(portway.pid)
            asyncio.run(_warm(port))  # a few requests: pools, caches, the access log thread
            idle = _read(worker)

            async def held() -> dict[str, int]:
                writers = await _hold(port, args.connections)
                await asyncio.sleep(1.0)
                memory = h.memory_kib(worker)
                for writer in writers:
                    writer.close()
                return memory

            loaded = asyncio.run(held())
        finally:
            portway.stop()
            backend.stop()
    per_connection = {k: (loaded[k] - idle[k]) * 1024 / args.connections for k in idle}
    rows = [
        ("worker, idle", idle),
        (f"worker, {args.connections} idle keep-alive connections", loaded),
        ("supervisor", supervisor),
    ]
    if args.markdown:
        print(f"Build: {build}; {h.machine()}\n")
        print("| process | RSS MiB | PSS MiB | USS MiB |")
        print("|---|---:|---:|---:|")
        for name, memory in rows:
            print(
                f"| {name} | {memory['rss'] / 1024:.1f} | {memory['pss'] / 1024:.1f} | "
                f"{memory['uss'] / 1024:.1f} |"
            )
        print(
            f"| per idle keep-alive connection | {per_connection['rss'] / 1024:.2f} KiB | "
            f"{per_connection['pss'] / 1024:.2f} KiB | {per_connection['uss'] / 1024:.2f} KiB |"
        )
    else:
        print(f"# {build}; {h.machine()}")
        for name, memory in rows:
            print(
                f"{name}: RSS {memory['rss'] / 1024:.1f} MiB, PSS {memory['pss'] / 1024:.1f} MiB, "
                f"USS {memory['uss'] / 1024:.1f} MiB"
            )
        print(
            f"per idle keep-alive connection: RSS {per_connection['rss'] / 1024:.2f} KiB, "
            f"USS {per_connection['uss'] / 1024:.2f} KiB"
        )


if __name__ == "__main__":
    main()
