"""The wire side of ``FakeApiServer``: the resources it serves, the URL grammar, Status bodies,
JSON merge patch, and the HTTP/1.1 handler (plain answers with Content-Length, watch streams as
chunked JSON lines that end cleanly or are cut without their last chunk)."""

from __future__ import annotations

import copy
import json
import re
import socket
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

Obj = dict[str, Any]
# plural -> (apiVersion, kind, namespaced)
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "ingresses": ("networking.k8s.io/v1", "Ingress", True),
    "ingressclasses": ("networking.k8s.io/v1", "IngressClass", False),
    "services": ("v1", "Service", True),
    "endpointslices": ("discovery.k8s.io/v1", "EndpointSlice", True),
    "secrets": ("v1", "Secret", True),
    "leases": ("coordination.k8s.io/v1", "Lease", True),
    "events": ("v1", "Event", True),
}
PLURAL = {kind: plural for plural, (_, kind, _) in RESOURCES.items()}
PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[a-z]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>status))?$"
)


@dataclass(frozen=True, slots=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    token: str | None  # the bearer token sent: which client asked, when each has its own


@dataclass(eq=False)  # one per request: compared and hashed by identity
class Stream:
    plural: str
    namespace: str | None
    cursor: int
    bookmarks: bool
    bookmark_due: bool = False
    ending: str | None = None  # "drop" or "end"


@dataclass
class Change:
    version: int
    plural: str
    namespace: str
    type: str
    obj: Obj = field(repr=False)


def status_body(code: int, reason: str, message: str) -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
            "reason": reason, "message": message, "metadata": {}}  # fmt: skip


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: Any  # the FakeApiServer: handle(), _changed, _connections

    def setup(self) -> None:
        super().setup()
        with self.fake._changed:
            self.fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.fake._changed:
            self.fake._connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self.fake.handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def reply(self, code: int, body: Obj) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, event: Obj) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def finish_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def drop(self) -> None:
        """Cut the connection mid-stream: no last chunk, no TLS close_notify."""
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


def handler_for(fake: Any) -> type[Handler]:
    return type("FakeApiHandler", (Handler,), {"fake": fake})
