#!/usr/bin/env python3
"""User-space cost of one proxied request, without sockets: µs of Python per request.

Drives a real ClientConnection and a pooled UpstreamConnection through in-memory transports, so
the number excludes the kernel's loopback work and shows only what Portway's own code costs.
    .venv/bin/python bench/micro_hotpath.py [--requests N] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from typing import Any

from portway.config.model import Config
from portway.gateway import Gateway, new_event_loop
from portway.server.http1 import ClientConnection
from portway.server.listeners import Listener
from portway.upstream.connection import UpstreamConnection

REQUEST = (
    b"GET /api/users/42?x=1 HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: wrk\r\n"
    b"Accept: */*\r\n\r\n"
)
RESPONSE = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"


class MemoryTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def write(self, data: Any) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-access-log", dest="access_log", action="store_false")
    args = parser.parse_args()
    loop = new_event_loop()
    config = Config.model_validate(
        {
            "listeners": [{"address": "127.0.0.1:0"}],
            "server": {"access_log": {"enabled": args.access_log}},
            "services": {"bench": {"instances": ["127.0.0.1:9"]}},
            "routes": [{"path": "/", "service": "bench"}],
        }
    )
    gateway = Gateway(config, loop)
    pool = gateway.snapshot.services["bench"].pools[0]
    upstream = UpstreamConnection(pool)
    upstream_transport = MemoryTransport()
    upstream.connection_made(upstream_transport)
    pool.release(upstream)
    client = ClientConnection(gateway.ctx, Listener(config, 0, 8080, gateway.ctx.stats))
    client_transport = MemoryTransport()
    client.connection_made(client_transport)

    access_log = gateway.ctx.access_log

    def one() -> None:
        client.data_received(REQUEST)
        upstream.data_received(RESPONSE)

    for _ in range(1000):
        one()
    assert client_transport.written[-1].endswith(b"ok\n"), client_transport.written[-1]
    profiler = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    for n in range(args.requests):
        one()
        if access_log is not None and n % 1000 == 0:
            access_log._batch.clear()  # the sweeper hands batches to the writer; not measured
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started
    print(f"{elapsed / args.requests * 1e6:.2f} µs of Python per proxied request")
    print(f"upstream request: {upstream_transport.written[-1]!r}")
    print(f"client response: {client_transport.written[-1]!r}")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
