"""The admin listener: the stdlib HTTP server with a small, bounded pool of handler threads.

It serves a handful of requests a second at most (a scraper, a probe, a person), so the standard
library does: no new dependency, no event loop shared with traffic. The pool bounds the threads a
burst of connections can start, and each connection has a read timeout, so a slow or idle client
holds one thread for seconds at most.

Every endpoint requires ``Authorization: Bearer <admin.token>`` when a token is configured (the
config refuses an address off loopback without one); the comparison is constant-time. The one
exception is the dashboard's static files (``/``, ``/dashboard`` and its script and style sheet):
they hold no data, and a browser cannot send a header when it opens a page. The page reads the
token from its URL fragment (``#token=...``, never sent to the server) and sends it with every
request for data.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, urlsplit

from portway.admin.live import stats_json
from portway.admin.metrics import render
from portway.admin.openapi import openapi_document
from portway.admin.rate_limits import rate_limits_json
from portway.admin.sources import AdminState
from portway.admin.views import (
    certificates_json,
    config_json,
    routes_json,
    routes_text,
    services_json,
)
from portway.config.types import parse_host_port

log = logging.getLogger("portway.admin")

HANDLER_THREADS = 4
CLIENT_TIMEOUT = 10.0  # seconds a connection may stay silent
SHUTDOWN_POLL = 0.1


class _Handler(BaseHTTPRequestHandler):
    server: AdminServer
    timeout = CLIENT_TIMEOUT
    server_version = "portway-admin"
    # One request per connection: a scraper's idle keep-alive connection would hold one of the few
    # handler threads between scrapes.
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # the name http.server dispatches to
        url = urlsplit(self.path)
        asset = ASSETS.get(url.path)
        if asset is not None:
            try:
                self._send_asset(*asset)
            except Exception:
                log.exception("admin: GET %s failed", url.path)
                self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})
            return
        state = self.server.state
        token = state.source.config().admin.token
        if token is not None and not _authorized(self.headers.get("Authorization"), token):
            self._send_json(
                HTTPStatus.UNAUTHORIZED,
                {"error": "unauthorized"},
                {"WWW-Authenticate": 'Bearer realm="portway-admin"'},
            )
            return
        route = _ROUTES.get(url.path)
        if route is None:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {url.path}"})
            return
        try:
            route(self, parse_qs(url.query), token is not None)
        except Exception:
            log.exception("admin: GET %s failed", url.path)
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})

    def do_HEAD(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"", "text/plain", {"Allow": "GET"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD  # a read-only API

    # -- endpoints ---------------------------------------------------------------------------------

    def healthz(self, query: dict[str, list[str]], secured: bool) -> None:
        self._send_json(HTTPStatus.OK, {"status": "ok"})

    def readyz(self, query: dict[str, list[str]], secured: bool) -> None:
        readiness = self.server.state.readiness()
        body = {"ready": readiness.ready, "reason": readiness.reason, "workers": readiness.workers}
        status = HTTPStatus.OK if readiness.ready else HTTPStatus.SERVICE_UNAVAILABLE
        self._send_json(status, body)

    def config(self, query: dict[str, list[str]], secured: bool) -> None:
        self._send_json(HTTPStatus.OK, config_json(self.server.state.source.config()))

    def routes(self, query: dict[str, list[str]], secured: bool) -> None:
        config = self.server.state.source.config()
        if query.get("format", ["json"])[-1] == "text":
            body = routes_text(config).encode("utf-8")
            self._send(HTTPStatus.OK, body, "text/plain; charset=utf-8")
        else:
            self._send_json(HTTPStatus.OK, routes_json(config))

    def services(self, query: dict[str, list[str]], secured: bool) -> None:
        seen = self.server.state.observe()
        self._send_json(HTTPStatus.OK, services_json(seen.config, seen.totals, seen.health))

    def certificates(self, query: dict[str, list[str]], secured: bool) -> None:
        seen = self.server.state.observe()
        self._send_json(HTTPStatus.OK, certificates_json(seen.config, seen.totals))

    def rate_limits(self, query: dict[str, list[str]], secured: bool) -> None:
        seen = self.server.state.observe()
        routes: dict[str, list[str]] = {}
        for index, route in enumerate(seen.config.routes):
            for name in route.policies:
                routes.setdefault(name, []).append(route.name or f"route-{index}")
        self._send_json(HTTPStatus.OK, rate_limits_json(seen.totals.rate_limits, routes))

    def stats(self, query: dict[str, list[str]], secured: bool) -> None:
        seen = self.server.state.observe()
        self._send_json(HTTPStatus.OK, stats_json(seen.config, seen.totals, seen.health))

    def metrics(self, query: dict[str, list[str]], secured: bool) -> None:
        body, content_type = render(self.server.state.registry, self.headers.get("Accept", ""))
        self._send(HTTPStatus.OK, body, content_type)

    def openapi(self, query: dict[str, list[str]], secured: bool) -> None:
        self._send_json(HTTPStatus.OK, openapi_document(secured))

    def _send_asset(self, name: str, content_type: str) -> None:
        body = files("portway.admin").joinpath("dashboard", name).read_bytes()
        # Everything the page loads comes from this listener: no CDN, no inline script.
        headers = {
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
            "frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }
        self._send(HTTPStatus.OK, body, content_type, headers)

    # -- responses ---------------------------------------------------------------------------------

    def _send_json(
        self, status: HTTPStatus, body: Any, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body, indent=2).encode("utf-8") + b"\n"
        self._send(status, data, "application/json", headers)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("admin: %s %s", self.address_string(), format % args)


_ROUTES = {
    "/healthz": _Handler.healthz,
    "/readyz": _Handler.readyz,
    "/config": _Handler.config,
    "/routes": _Handler.routes,
    "/services": _Handler.services,
    "/certificates": _Handler.certificates,
    "/ratelimits": _Handler.rate_limits,
    "/stats": _Handler.stats,
    "/metrics": _Handler.metrics,
    "/openapi.json": _Handler.openapi,
}
ENDPOINTS = tuple(_ROUTES)
_PAGE = ("index.html", "text/html; charset=utf-8")
ASSETS = {  # the dashboard, shipped in the package (admin/dashboard/): path -> (file, type)
    "/": _PAGE,
    "/dashboard": _PAGE,
    "/dashboard/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}


def _authorized(header: str | None, token: str) -> bool:
    expected = f"Bearer {token}".encode()
    return hmac.compare_digest((header or "").strip().encode("utf-8", "replace"), expected)


class AdminServer(HTTPServer):
    """Serves ``state`` on a listening socket it is given (the supervisor binds it once, so a
    restarted admin process reuses it) or binds itself."""

    daemon_threads = True

    def __init__(self, state: AdminState, sock: socket.socket) -> None:
        self.state = state
        self._pool = ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="portway-admin")
        self._thread: threading.Thread | None = None
        host, port = sock.getsockname()[:2]
        super().__init__((host, port), _Handler, bind_and_activate=False)
        self.socket.close()  # the unbound one the base class made; serve ``sock`` instead
        self.socket = sock
        self.socket.setblocking(True)
        self.server_name, self.server_port = host, port

    @property
    def port(self) -> int:
        port: int = self.socket.getsockname()[1]
        return port

    def process_request(self, request: Any, client_address: Any) -> None:
        self._pool.submit(self._process, request, client_address)

    def _process(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("admin: connection from %s failed", client_address, exc_info=True)

    def start(self) -> None:
        """Serve from a background thread."""
        self._thread = threading.Thread(
            # The poll interval is how long ``stop`` waits for the loop to notice; select()
            # timing out ten times a second costs nothing measurable.
            target=self.serve_forever,
            args=(SHUTDOWN_POLL,),
            name="portway-admin",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()  # returns once serve_forever has left its loop
        self.server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._thread is not None:
            self._thread.join(5.0)


def bind_admin(address: str) -> socket.socket:
    """A bound, listening blocking socket for the admin ``host:port``."""
    host, port = parse_host_port(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock
