#!/usr/bin/env python3
"""User-space cost of one proxied request, without sockets: µs of Python per request.

Drives a real ClientConnection and a pooled UpstreamConnection through in-memory transports, so
the number excludes the kernel's loopback work and shows only what Portway's own code costs. Says
which build it measured (compiled by mypyc or pure Python: see docs/performance.md).
    .venv/bin/python bench/micro_hotpath.py [--requests N] [--rounds R] [--profile]
    .venv/bin/python bench/micro_hotpath.py --peer uvproxy   # the bare Python peer, same harness
    .venv/bin/python bench/micro_hotpath.py --in-flight 1,50,200  # N requests in flight at once
With ``--in-flight N`` there are N client and N upstream connections: N requests arrive, then their
N responses, in waves, so N exchanges (and their state) are alive at once, as under N connections
of load; the cost is per request.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REQUEST = (
    b"GET /api/users/42?x=1 HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"
)
SHARED_PROXIES = Path(__file__).resolve().parents[2] / "shared" / "bench" / "proxies"


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


def default_config(access_log: bool = True) -> dict[str, Any]:
    return {
        "listeners": [{"address": "127.0.0.1:0"}],
        "server": {"access_log": {"enabled": access_log, "path": "/dev/null"}},
        "services": {"bench": {"instances": ["127.0.0.1:9"]}},
        "routes": [{"path": "/", "service": "bench"}],
    }


def portway_pair(
    config_data: dict[str, Any], request: bytes = REQUEST
) -> tuple[Callable[[], None], Callable[[], None], list[bytes], list[bytes], Any]:
    """One request and its response through a real Portway client and upstream connection:
    (one, tidy, client writes, upstream writes, gateway). ``tidy`` drops what piles up between
    sweeps (the access log's lines), not measured."""
    from portway.config.model import Config
    from portway.gateway import Gateway, new_event_loop
    from portway.server.http1 import ClientConnection
    from portway.server.listeners import Listener
    from portway.upstream.connection import UpstreamConnection

    loop = new_event_loop()
    config = Config.model_validate(config_data)
    gateway = Gateway(config, loop)
    service = next(iter(gateway.snapshot.services.values()))
    pool = service.pools[0]
    upstream = UpstreamConnection(pool)
    upstream_transport = MemoryTransport()
    upstream.connection_made(upstream_transport)
    pool.release(upstream)
    client = ClientConnection(gateway.ctx, Listener(config, 0, 8080, gateway.ctx.stats))
    client_transport = MemoryTransport()
    client.connection_made(client_transport)
    access_log = gateway.ctx.access_log
    client_data = client.data_received
    upstream_data = upstream.data_received
    # Writes wait for the end of the loop's iteration (portway.write_batch); here, with no loop
    # running, each request's are written at once: the batch's cost without its sharing.
    flush = gateway.ctx.sweeper.writes.flush

    def one() -> None:
        client_data(request)
        flush()
        upstream_data(RESPONSE)
        flush()

    def tidy() -> None:
        client_transport.written.clear()
        upstream_transport.written.clear()
        if access_log is not None:
            access_log._batch.clear()  # the sweeper hands them to the writer thread

    return one, tidy, client_transport.written, upstream_transport.written, gateway


def portway_wave(
    config_data: dict[str, Any], in_flight: int
) -> tuple[Callable[[], None], Callable[[], None], list[bytes], list[bytes], Any]:
    """``portway_pair`` with ``in_flight`` client and upstream connections: one call is a wave of
    that many requests, then their responses."""
    from portway.config.model import Config
    from portway.gateway import Gateway, new_event_loop
    from portway.server.http1 import ClientConnection
    from portway.server.listeners import Listener
    from portway.upstream.connection import UpstreamConnection

    config_data["services"]["bench"]["pool"] = {"max_idle": in_flight}
    config = Config.model_validate(config_data)
    gateway = Gateway(config, new_event_loop())
    pool = next(iter(gateway.snapshot.services.values())).pools[0]
    upstreams: list[tuple[Any, MemoryTransport]] = []
    for _ in range(in_flight):
        upstream = UpstreamConnection(pool)
        transport = MemoryTransport()
        upstream.connection_made(transport)
        pool.release(upstream)
        upstreams.append((upstream.data_received, transport))
    listener = Listener(config, 0, 8080, gateway.ctx.stats)
    clients: list[tuple[Any, MemoryTransport]] = []
    for _ in range(in_flight):
        client = ClientConnection(gateway.ctx, listener)
        transport = MemoryTransport()
        client.connection_made(transport)
        clients.append((client.data_received, transport))
    access_log = gateway.ctx.access_log
    flush = gateway.ctx.sweeper.writes.flush
    last_request: list[bytes] = []

    def wave() -> None:
        for data, _ in clients:
            data(REQUEST)
        flush()
        for data, transport in upstreams:
            if transport.written:  # an exchange was bound to it: its request is there
                last_request[:] = transport.written[-1:]
                transport.written.clear()
                data(RESPONSE)
        flush()

    def tidy() -> None:
        for _, transport in clients:
            transport.written.clear()
        if access_log is not None:
            access_log._batch.clear()

    return wave, tidy, clients[-1][1].written, last_request, gateway


def uvproxy_pair() -> tuple[Callable[[], None], Callable[[], None], list[bytes], list[bytes], Any]:
    """The same exchange through the shared harness's bare uvproxy."""
    sys.path.insert(0, str(SHARED_PROXIES))
    import uvloop
    import uvproxy  # type: ignore[import-not-found]

    loop = uvloop.new_event_loop()
    pool = uvproxy.Pool(loop, "127.0.0.1", 9, 64)
    upstream = uvproxy.Upstream(pool)
    upstream_transport = MemoryTransport()
    upstream.connection_made(upstream_transport)
    pool.release(upstream)
    client = uvproxy.Client(pool)
    client_transport = MemoryTransport()
    client.connection_made(client_transport)

    def one() -> None:
        client.data_received(REQUEST)
        upstream.data_received(RESPONSE)

    def tidy() -> None:
        client_transport.written.clear()
        upstream_transport.written.clear()

    return one, tidy, client_transport.written, upstream_transport.written, None


def measure(
    one: Callable[[], None],
    tidy: Callable[[], None],
    requests: int,
    rounds: int,
    profiler: cProfile.Profile | None = None,
    per_call: int = 1,
) -> list[float]:
    """µs per request of each round (sorted), ``one`` handling ``per_call`` requests; ``tidy``
    every 1000 requests, untimed."""
    calls = max(1, requests // per_call)
    for _ in range(max(1, 1000 // per_call)):
        one()
    tidy()
    results = []
    for _ in range(rounds):
        elapsed = 0.0
        done = 0
        while done < calls:
            batch = min(max(1, 1000 // per_call), calls - done)
            started = time.perf_counter()
            if profiler:
                profiler.enable()
            for _ in range(batch):
                one()
            if profiler:
                profiler.disable()
            elapsed += time.perf_counter() - started
            done += batch
            tidy()
        results.append(elapsed / (calls * per_call) * 1e6)
    return sorted(results)


def build_name() -> str:
    """Which build of the hot path is imported: compiled by mypyc, or pure Python."""
    import portway.server.http1 as http1

    compiled = not http1.__file__.endswith(".py")
    return f"{'compiled (mypyc)' if compiled else 'pure Python'}: {Path(http1.__file__).name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="per round")
    parser.add_argument("--rounds", type=int, default=5, help="the best round is reported")
    parser.add_argument("--profile", action="store_true", help="cProfile one round")
    parser.add_argument("--no-access-log", dest="access_log", action="store_false")
    parser.add_argument("--peer", choices=("portway", "uvproxy"), default="portway")
    parser.add_argument(
        "--in-flight", default="1", help="requests in flight at once (comma list: one run each)"
    )
    args = parser.parse_args()
    counts = [int(count) for count in args.in_flight.split(",")]
    if counts != [1]:
        if args.peer != "portway" or args.profile:
            parser.error("--in-flight is for Portway, without --profile")
        for count in counts:
            wave, tidy, client_out, _, _ = portway_wave(default_config(args.access_log), count)
            wave()
            assert client_out[-1].endswith(b"ok\n"), client_out[-1]
            rounds = measure(wave, tidy, args.requests, args.rounds, per_call=count)
            print(
                f"{rounds[0]:.2f} µs of Python per proxied request with {count} in flight (best "
                f"of {len(rounds)} rounds of {args.requests}; median {rounds[len(rounds) // 2]:.2f})"
                f" -- portway, {build_name()}"
            )
        return
    if args.peer == "uvproxy":
        one, tidy, client_out, upstream_out, _ = uvproxy_pair()
        name = "uvproxy (the bare peer)"
    else:
        one, tidy, client_out, upstream_out, _ = portway_pair(default_config(args.access_log))
        name = f"portway, {build_name()}"
    one()
    assert client_out[-1].endswith(b"ok\n"), client_out[-1]
    upstream_request, client_response = upstream_out[-1], client_out[-1]
    profiler = cProfile.Profile() if args.profile else None
    rounds = measure(one, tidy, args.requests, 1 if profiler else args.rounds, profiler)
    print(
        f"{rounds[0]:.2f} µs of Python per proxied request (best of {len(rounds)} rounds of "
        f"{args.requests}; median {rounds[len(rounds) // 2]:.2f}) -- {name}"
    )
    print(f"upstream request: {upstream_request!r}")
    print(f"client response: {client_response!r}")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
