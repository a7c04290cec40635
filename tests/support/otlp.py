"""A real OTLP/HTTP traces endpoint on loopback, for the tests of span export.

It answers every POST as a collector does (an empty ``ExportTraceServiceResponse``) and keeps each
request's path, content type and decoded message, so a test checks what went over the wire.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span


@dataclass(frozen=True)
class Export:
    path: str
    content_type: str
    message: ExportTraceServiceRequest


class OtlpReceiver:
    """Serves from a background thread between ``with`` and its end; ``endpoint`` is its URL."""

    def __init__(self) -> None:
        self.exports: list[Export] = []
        exports = self.exports

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                message = ExportTraceServiceRequest()
                message.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                exports.append(Export(self.path, self.headers["Content-Type"], message))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[Span]:
        """Every span received so far, in arrival order."""
        return [
            span
            for export in list(self.exports)
            for resource in export.message.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]

    def wait_for_spans(self, count: int, timeout: float = 10.0) -> list[Span]:
        """The spans once at least ``count`` arrived, or what arrived within ``timeout``."""
        deadline = time.monotonic() + timeout
        while len(self.spans()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.spans()

    def __enter__(self) -> Self:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
