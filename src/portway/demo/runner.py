"""``portway demo``: three example services, two instances each, and a gateway in front of them."""

from __future__ import annotations

import asyncio
import logging
import signal

from portway.config.model import Config
from portway.config.types import format_host_port, parse_host_port
from portway.demo.backend import start_backend
from portway.gateway import Gateway, new_event_loop

log = logging.getLogger("portway.demo")

SERVICES = ("users", "payments", "orders")
HOST_RULE = "payments.localhost"
DEMO_API_KEY = "demo-key-0123456789abcdef"


def demo_config(
    listen: str, instances: dict[str, list[str]], admin: str | None = "127.0.0.1:9901"
) -> Config:
    """Routes /users, /payments, /orders; the host payments.localhost sends everything to payments;
    /account needs an API key and allows 5 requests per 10 s per consumer."""
    return Config.model_validate(
        {
            "listeners": [{"address": listen}],
            "admin": {"address": admin},
            "services": {
                "users": {"instances": instances["users"]},
                "payments": {"instances": instances["payments"], "algorithm": "least_request"},
                "orders": {
                    "instances": instances["orders"],
                    "sticky": {"cookie": "demo_orders"},
                },
            },
            "policies": {
                "demo-keys": {
                    "api_key": {"keys": [{"consumer": "demo-user", "key": DEMO_API_KEY}]}
                },
                "demo-quota": {"rate_limit": {"requests": 5, "per": "10s", "key": "consumer"}},
            },
            "routes": [
                {
                    "name": "account",
                    "path": "/account",
                    "service": "users",
                    "policies": ["demo-keys", "demo-quota"],
                },
                {"name": "users", "path": "/users", "service": "users"},
                {"name": "payments", "path": "/payments", "service": "payments"},
                {"name": "orders", "path": "/orders", "service": "orders"},
                {"name": "payments-host", "hosts": [HOST_RULE], "path": "/", "service": "payments"},
            ],
        }
    )


def curl_lines(base: str) -> list[str]:
    return [
        f"curl -s {base}/users/42",
        f"curl -s {base}/payments -d 'amount=10'",
        f"curl -s -c /tmp/demo-cookies -b /tmp/demo-cookies {base}/orders   # sticky: same instance",
        f"curl -s -H 'Host: {HOST_RULE}' {base}/anything   # host rule",
        f"curl -s -i {base}/nowhere   # no route: 404 with a request id",
        f"curl -s -i -H 'x-api-key: {DEMO_API_KEY}' {base}/account   # API key, 5 per 10 s",
    ]


async def _serve(listen: str, admin: str | None) -> int:
    loop = asyncio.get_running_loop()
    _host, _ = parse_host_port(listen)
    backends: list[asyncio.Server] = []
    instances: dict[str, list[str]] = {}
    for service in SERVICES:
        for n in (1, 2):
            server = await start_backend(service, f"{service}-{n}", "127.0.0.1", 0)
            backends.append(server)
            port = server.sockets[0].getsockname()[1]
            instances.setdefault(service, []).append(f"127.0.0.1:{port}")
    gateway = Gateway(demo_config(listen, instances, admin), loop, admin=True)
    try:
        addresses = await gateway.start()
    except OSError as exc:
        if exc.filename:  # the admin address
            hint = "try --admin 127.0.0.1:9902, or --admin none"
            log.error("cannot listen on %s: %s (%s)", exc.filename, exc.strerror, hint)
        else:
            hint = "try --listen 127.0.0.1:8081"
            log.error("cannot listen on %s: %s (%s)", listen, exc.strerror, hint)
        for server in backends:
            server.close()
        return 1
    base = "http://" + format_host_port(*addresses[0])
    print(f"\nPortway demo: gateway on {base}", flush=True)
    for service, addrs in instances.items():
        print(f"  service {service:<9} instances {', '.join(addrs)}", flush=True)
    if gateway.admin_address is not None:
        admin_base = "http://" + format_host_port(*gateway.admin_address)
        print(f"admin on {admin_base}: /services /routes?format=text /metrics", flush=True)
    print("\nTry:", flush=True)
    for line in curl_lines(base):
        print(f"  {line}", flush=True)
    print("\nCtrl-C stops everything.\n", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("stopping: draining the gateway, then the example services", flush=True)
    await gateway.drain(5.0)
    for server in backends:
        server.close()
        await server.wait_closed()
    return 0


def run_demo(listen: str, admin: str | None = "127.0.0.1:9901") -> int:
    loop = new_event_loop()
    try:
        return loop.run_until_complete(_serve(listen, admin))
    finally:
        loop.close()
