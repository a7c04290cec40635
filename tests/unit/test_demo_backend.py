"""The demo's example service, over a real loopback connection."""

from __future__ import annotations

import asyncio
from datetime import datetime

from portway.demo.backend import start_backend
from tests.support.responses import parse_responses


async def _exchange(raw_requests: bytes) -> bytes:
    server = await start_backend("web", "web-1", "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw_requests)
        await writer.drain()
        received = await asyncio.wait_for(reader.read(), timeout=5)  # until the server closes
        writer.close()
        await writer.wait_closed()
        return received
    finally:
        server.close()
        await server.wait_closed()


def test_answers_pipelined_requests_in_order_on_one_connection() -> None:
    raw = (
        b"GET /cart/items?page=2 HTTP/1.1\r\nHost: shop.local\r\nX-Request-Id: abc-1\r\n"
        b"X-Forwarded-For: 10.0.0.7\r\nX-Forwarded-For: 10.0.0.8\r\n\r\n"
        b"POST /orders HTTP/1.1\r\nHost: shop.local\r\nContent-Length: 4\r\n"
        b"Connection: close\r\n\r\nbody"
    )

    first, second = parse_responses(asyncio.run(_exchange(raw)))

    assert first.status == 200
    assert first.header("content-type") == "application/json"
    assert first.header("connection") is None  # kept alive: the second answer came on it
    answer = first.json()
    assert answer["service"] == "web"
    assert answer["instance"] == "web-1"
    assert answer["method"] == "GET"
    assert answer["path"] == "/cart/items"
    assert answer["query"] == "page=2"
    assert answer["headers"] == {
        "host": "shop.local",
        "x-request-id": "abc-1",
        "x-forwarded-for": "10.0.0.7, 10.0.0.8",
    }
    assert datetime.fromisoformat(answer["time"]).tzinfo is not None
    assert first.body.startswith(b'{\n  "service": "web"')  # pretty-printed for people

    assert second.header("connection") == "close"
    assert second.json()["method"] == "POST"
    assert second.json()["path"] == "/orders"
    assert second.json()["query"] == ""


def test_malformed_request_gets_400_and_close() -> None:
    (response,) = parse_responses(asyncio.run(_exchange(b"NOT HTTP\r\n\r\n")))

    assert response.status == 400
    assert response.header("connection") == "close"
    assert response.json() == {"error": "malformed request"}
