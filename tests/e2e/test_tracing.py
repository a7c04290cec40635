"""W3C trace context through the gateway, and spans exported over OTLP/HTTP to a real receiver."""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from tests.e2e.gateway import GatewayThread
from tests.support.backends import Backend
from tests.support.client import request

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$")
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def config(address: str, **tracing: Any) -> dict[str, Any]:
    return {
        "server": {"tracing": tracing, "access_log": {"enabled": False}},
        "services": {"web": {"instances": [address]}},
        "routes": [{"name": "site", "path": "/", "service": "web"}],
    }


def test_a_trace_is_started_when_absent_and_continued_when_present() -> None:
    """W3C Trace Context §3.2: a valid traceparent is continued (same trace id); an invalid or
    missing one starts a new trace; tracestate goes along unchanged."""
    with Backend() as backend, GatewayThread(config(backend.address)) as g:
        new = request(g.port, "GET", "/a").json()["headers"]
        continued = request(
            g.port,
            "GET",
            "/b",
            headers={
                "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
                "tracestate": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
            },
        ).json()["headers"]
        invalid = request(
            g.port, "GET", "/c", headers={"traceparent": f"00-{'0' * 32}-{CALLER_SPAN}-01"}
        ).json()["headers"]
    started = TRACEPARENT.match(new["traceparent"])
    assert started and started.group(1) != "0" * 32
    assert "tracestate" not in new
    kept = TRACEPARENT.match(continued["traceparent"])
    assert kept and kept.group(1) == CALLER_TRACE
    assert continued["traceparent"].endswith("-01")  # the caller's sampling decision holds
    assert continued["tracestate"] == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    fresh = TRACEPARENT.match(invalid["traceparent"])
    assert fresh and fresh.group(1) != "0" * 32  # an all-zero trace id is invalid: restarted


class _Receiver(BaseHTTPRequestHandler):
    messages: ClassVar[list[ExportTraceServiceRequest]] = []

    def do_POST(self) -> None:
        message = ExportTraceServiceRequest()
        message.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
        self.messages.append(message)
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_spans_for_the_gateway_hop_and_each_try_reach_an_otlp_receiver() -> None:
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}"
    try:
        with Backend("ok") as ok:
            cfg = config(ok.address, enabled=True, otlp_endpoint=endpoint, service_name="edge")
            with GatewayThread(cfg) as g:
                response = request(
                    g.port,
                    "GET",
                    "/users/1",
                    headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
                )
                upstream_parent = TRACEPARENT.match(response.json()["headers"]["traceparent"])
                assert upstream_parent is not None
                deadline = time.monotonic() + 10
                while not _Receiver.messages and time.monotonic() < deadline:
                    time.sleep(0.1)
    finally:
        receiver.shutdown()
        receiver.server_close()
    spans = [
        span
        for message in _Receiver.messages
        for resource in message.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    server = [s for s in spans if s.kind == ProtoSpan.SPAN_KIND_SERVER]
    client = [s for s in spans if s.kind == ProtoSpan.SPAN_KIND_CLIENT]
    assert len(server) == 1 and len(client) == 1
    assert server[0].trace_id.hex() == CALLER_TRACE
    assert server[0].parent_span_id.hex() == CALLER_SPAN  # continues the caller's trace
    assert client[0].parent_span_id == server[0].span_id  # each try is a child of the hop
    assert client[0].span_id.hex() == upstream_parent.group(2)  # what the backend was told
    attributes = {a.key: a.value for a in server[0].attributes}
    assert attributes["http.response.status_code"].int_value == 200
    assert attributes["http.route"].string_value == "site"
