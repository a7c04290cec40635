#!/usr/bin/env python3
"""What each policy adds to a proxied request: µs of Python per request, without sockets.

Uses micro_hotpath's harness (a real ClientConnection and pooled UpstreamConnection on in-memory
transports) with one route per variant, rounds interleaved so that a noisy machine moves every
variant alike. Prints a Markdown table: best round per variant and its cost above no policy.
    .venv/bin/python bench/policy_overhead.py [--requests N] [--rounds R]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from micro_hotpath import build_name, default_config, measure, portway_pair  # noqa: E402

API_KEY = "bench-key-0123456789abcdef"
SECRET = "bench-secret-0123456789abcdef0123456789"
PASSWORD = "bench-password"


def _pbkdf2(password: str, iterations: int = 100_000) -> str:
    salt = base64.b64encode(os.urandom(12)).decode()
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(digest).decode()}"


def _token() -> str:
    import jwt

    claims = {"sub": "bench", "exp": int(time.time()) + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def variants() -> dict[str, tuple[dict[str, Any], list[tuple[str, str]]]]:
    """name -> (policies section, request headers); every variant admits every request."""
    unlimited = {"requests": 10**9, "per": "1h"}
    basic = base64.b64encode(f"bench:{PASSWORD}".encode()).decode()
    return {
        "none": ({}, []),
        "api_key": (
            {"p": {"api_key": {"keys": [{"consumer": "bench", "key": API_KEY}]}}},
            [("x-api-key", API_KEY)],
        ),
        "basic_auth (cached)": (
            {"p": {"basic_auth": {"users": [{"name": "bench", "password_hash": _pbkdf2(PASSWORD)}]}}},
            [("authorization", f"Basic {basic}")],
        ),
        "jwt HS256": (
            {"p": {"jwt": {"algorithms": ["HS256"], "secret": SECRET}}},
            [("authorization", f"Bearer {_token()}")],
        ),
        "rate_limit client_ip": ({"p": {"rate_limit": unlimited}}, []),
        "api_key + rate_limit consumer": (
            {
                "k": {"api_key": {"keys": [{"consumer": "bench", "key": API_KEY}]}},
                "p": {"rate_limit": {**unlimited, "key": "consumer"}},
            },
            [("x-api-key", API_KEY)],
        ),
    }


def _request(headers: list[tuple[str, str]]) -> bytes:
    lines = [b"GET /api/users/42?x=1 HTTP/1.1", b"Host: bench.local", b"User-Agent: wrk"]
    lines += [f"{k}: {v}".encode() for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved; the best is reported")
    args = parser.parse_args()
    runners = {}
    for name, (policies, headers) in variants().items():
        config = default_config()
        config["policies"] = policies
        config["routes"] = [{"path": "/", "service": "bench", "policies": sorted(policies)}]
        one, tidy, client_out, _, _ = portway_pair(config, _request(headers))
        one()
        assert client_out[-1].startswith(b"HTTP/1.1 200"), (name, client_out[-1][:200])
        runners[name] = (one, tidy)
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, (one, tidy) in runners.items():
            result = measure(one, tidy, args.requests, 1)[0]
            best[name] = min(best.get(name, result), result)
    print(f"Policy overhead, {build_name()}; best of {args.rounds} interleaved rounds of "
          f"{args.requests} requests\n")  # fmt: skip
    print("| policies on the route | µs per request | added |")
    print("|---|---:|---:|")
    for name, micros in best.items():
        print(f"| {name} | {micros:.2f} | {micros - best['none']:+.2f} |")


if __name__ == "__main__":
    main()
