"""A stand-in for the Kubernetes API server that speaks its list/watch wire protocol over HTTPS.

No API server can run on these machines, so the controller's real client (lightkube's kubeconfig,
TLS and bearer token; our list/watch) is tested against this one. What it does, as the real one:

* ``GET`` a collection, one namespace's (``/api/v1/namespaces/NS/services``) or every
  namespace's (``/api/v1/services``): a ``...List`` whose items carry no ``kind``/``apiVersion``
  and whose ``metadata.resourceVersion`` is the current version;
* ``GET ...?watch=true&resourceVersion=N``: HTTP/1.1 chunked, one JSON event per line, every
  change after N (ADDED, MODIFIED, DELETED), BOOKMARKs when asked for and allowed; the stream
  ends cleanly after ``timeoutSeconds``. A version older than the kind's compaction point gets
  410 Gone: an ERROR event with a 410 ``Status`` (as the real server answers), or the HTTP
  status itself with ``gone_as_http``;
* one global ``resourceVersion`` counter across kinds; ``uid`` and ``creationTimestamp`` set on
  creation; ``fieldSelector=type!=X`` on Secrets;
* ``PATCH .../ingresses/NAME/status`` (JSON merge patch), Leases (``GET``, ``POST``, ``PUT``
  with a stale ``metadata.resourceVersion`` -> 409 Conflict), ``POST`` of Events, ``GET`` of one
  object (404 ``Status`` when missing), 401 without the bearer token.

Tests drive it (``apply``, ``delete``, ``bookmark``, ``drop_watches``, ``end_watches``,
``expire``, ``held``) and read every request it received (``requests``). Threads: one per connection
(``ThreadingHTTPServer``); the TLS handshake runs in that thread.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as dt
import json
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import trustme
import yaml

from tests.support.fake_apiserver_wire import (
    PATH,
    PLURAL,
    RESOURCES,
    Change,
    Handler,
    Obj,
    Recorded,
    Stream,
    handler_for,
    merge_patch,
    status_body,
)
from tests.support.lifecycle import StartStop

__all__ = ["PATH", "FakeApiServer", "Recorded"]

class FakeApiServer(StartStop):
    def __init__(self, *tokens: str) -> None:
        self.tokens = set(tokens or ("fake-token",))
        self.ca = trustme.CA()
        self.gone_as_http = False
        self.requests_: list[Recorded] = []
        self._changed = threading.Condition()
        self._version = 100
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._history: list[Change] = []
        self._compacted: dict[str, int] = {}
        self._streams: set[Stream] = set()
        self._held: set[str] = set()
        self._connections: set[socket.socket] = set()
        self._closing = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(self))
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True,
                                            do_handshake_on_connect=False)  # fmt: skip
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting and cut every open connection (keep-alive ones too): unreachable."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
            connections = list(self._connections)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5.0)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def kubeconfig(
        self, path: Path, namespace: str = "portway-system", token: str | None = None
    ) -> Path:
        """A kubeconfig naming this server, its CA (inline) and a bearer token (one of the
        accepted ones by default)."""
        token = token or min(self.tokens)
        ca = base64.b64encode(self.ca.cert_pem.bytes()).decode()
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url,
                                                     "certificate-authority-data": ca}}],
            "users": [{"name": "fake", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake",
                                                     "namespace": namespace}}],
        }  # fmt: skip
        path.write_text(yaml.safe_dump(config))
        return path

    # ---- what tests do ----------------------------------------------------------------------

    @property
    def version(self) -> int:
        with self._changed:
            return self._version

    def apply(self, *objects: Obj) -> None:
        """Create or replace each object (by kind, namespace, name): ADDED or MODIFIED."""
        with self._changed:
            for obj in objects:
                self._store(copy.deepcopy(obj))
            self._changed.notify_all()

    def delete(self, kind: str, namespace: str, name: str) -> None:
        plural = PLURAL[kind]
        with self._changed:
            obj = self._objects.pop((plural, namespace, name))
            self._version += 1
            obj["metadata"]["resourceVersion"] = str(self._version)
            self._record(plural, namespace, "DELETED", obj)
            self._changed.notify_all()

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        with self._changed:
            found = self._objects.get((PLURAL[kind], namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def names(self, kind: str) -> set[tuple[str, str]]:
        """(namespace, name) of every object of ``kind``."""
        with self._changed:
            return {(ns, name) for (plural, ns, name) in self._objects if plural == PLURAL[kind]}

    def bookmark(self) -> int:
        """A BOOKMARK at the current version on every open watch that allows them."""
        with self._changed:
            for stream in self._streams:
                stream.bookmark_due = stream.bookmarks
            self._changed.notify_all()
            return self._version

    def drop_watches(self, kind: str | None = None) -> int:
        """Cut open watch streams without ending them (a lost connection); how many."""
        return self._end(kind, "drop")

    def end_watches(self, kind: str | None = None) -> int:
        """End open watch streams cleanly (as ``timeoutSeconds`` does); how many."""
        return self._end(kind, "end")

    @contextlib.contextmanager
    def held(self, kind: str) -> Iterator[None]:
        """While inside, watches of ``kind`` send nothing and new ones wait for the end of the
        block: what happens meanwhile reaches clients only after it (a client that is away)."""
        with self._changed:
            self._held.add(PLURAL[kind])
        try:
            yield
        finally:
            with self._changed:
                self._held.discard(PLURAL[kind])
                self._changed.notify_all()

    def expire(self, kind: str | None = None) -> None:
        """Forget the history up to now: watching from an older version gets 410 Gone."""
        with self._changed:
            for plural in [PLURAL[kind]] if kind else list(RESOURCES):
                self._compacted[plural] = self._version

    def watching(self, kind: str | None = None) -> int:
        with self._changed:
            return sum(1 for s in self._streams if kind is None or s.plural == PLURAL[kind])

    def requests(
        self, method: str | None = None, path: str = "", token: str | None = None, **query: str
    ) -> list[Recorded]:
        """The requests received so far, those of ``method`` whose path holds ``path``, sent
        with ``token``, and whose query has ``query``'s values."""
        with self._changed:
            return [r for r in self.requests_
                    if (method is None or r.method == method) and path in r.path
                    and (token is None or r.token == token)
                    and all(r.query.get(k) == v for k, v in query.items())]  # fmt: skip

    def wait_for(self, check: Callable[[], object], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"not true within {timeout}s")
            time.sleep(0.02)

    # ---- the store (called with the condition held) -----------------------------------------

    def _end(self, kind: str | None, how: str) -> int:
        with self._changed:
            ended = [s for s in self._streams if kind is None or s.plural == PLURAL[kind]]
            for stream in ended:
                stream.ending = how
            self._changed.notify_all()
            return len(ended)

    def _store(self, obj: Obj) -> Obj:
        plural = PLURAL[obj["kind"]]
        meta = obj.setdefault("metadata", {})
        namespace = meta.get("namespace", "default") if RESOURCES[plural][2] else ""
        if namespace:
            meta["namespace"] = namespace
        previous = self._objects.get((plural, namespace, meta["name"]))
        self._version += 1
        meta["resourceVersion"] = str(self._version)
        if previous is None:
            meta.setdefault("uid", str(uuid.uuid4()))
            stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            meta.setdefault("creationTimestamp", stamp)
        else:
            meta["uid"] = previous["metadata"]["uid"]
            meta["creationTimestamp"] = previous["metadata"]["creationTimestamp"]
            if "status" not in obj and "status" in previous:  # as an update of the spec keeps it
                obj["status"] = previous["status"]
        self._objects[(plural, namespace, meta["name"])] = obj
        self._record(plural, namespace, "ADDED" if previous is None else "MODIFIED", obj)
        return obj

    def _record(self, plural: str, namespace: str, kind: str, obj: Obj) -> None:
        self._history.append(Change(self._version, plural, namespace, kind, copy.deepcopy(obj)))

    def _visible(self, plural: str, namespace: str | None, query: dict[str, str], obj: Obj) -> bool:
        if namespace and obj["metadata"].get("namespace") != namespace:
            return False
        for term in filter(None, query.get("fieldSelector", "").split(",")):
            name, _, value = term.partition("!=")
            if name == "type" and obj.get("type") == value:
                return False
        return True

    # ---- requests (called by the handler) ---------------------------------------------------

    def handle(self, request: Handler) -> None:
        url = urlsplit(request.path)
        query = dict(parse_qsl(url.query))
        length = int(request.headers.get("content-length") or 0)
        raw = request.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        credentials = request.headers.get("authorization") or ""
        token = credentials.removeprefix("Bearer ") if credentials.startswith("Bearer ") else None
        with self._changed:
            self.requests_.append(Recorded(request.command, url.path, query, body, token))
            self._changed.notify_all()
        match = PATH.match(url.path)
        if token not in self.tokens:
            request.reply(401, status_body(401, "Unauthorized", "Unauthorized"))
        elif match is None or match["plural"] not in RESOURCES:
            request.reply(404, status_body(404, "NotFound", f"no route for {url.path}"))
        elif request.command == "GET" and match["name"] is None and query.get("watch") == "true":
            self._watch(request, match["plural"], match["ns"], query)
        else:
            with self._changed:
                code, answer = self._answer(request.command, match, query, body)
                self._changed.notify_all()
            request.reply(code, answer)

    def _answer(self, method: str, match: re.Match[str], query: dict[str, str],
                body: Any) -> tuple[int, Obj]:  # fmt: skip
        plural, namespace, name = match["plural"], match["ns"] or "", match["name"]
        api_version, kind, _ = RESOURCES[plural]
        key = (plural, namespace, name or "")
        if method == "GET" and name is None:
            items = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")}
                     for (p, _, _), o in sorted(self._objects.items())
                     if p == plural and self._visible(plural, match["ns"], query, o)]  # fmt: skip
            return 200, {"kind": f"{kind}List", "apiVersion": api_version,
                         "metadata": {"resourceVersion": str(self._version)}, "items": items}  # fmt: skip
        if method == "POST" and name is None:
            body.setdefault("metadata", {})["namespace"] = namespace
            if (plural, namespace, body["metadata"]["name"]) in self._objects:
                return 409, status_body(409, "AlreadyExists", f"{plural} exists")
            return 201, self._store({**body, "kind": kind, "apiVersion": api_version})
        current = self._objects.get(key)
        if current is None:
            return 404, status_body(404, "NotFound", f'{plural} "{name}" not found')
        if method == "GET":
            return 200, current
        if method == "PUT":
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                message = "the object has been modified; please apply your changes to the latest "
                return 409, status_body(409, "Conflict", message + "version and try again")
            return 200, self._store({**body, "kind": kind, "apiVersion": api_version})
        if method == "PATCH" and match["sub"] == "status":
            status = merge_patch(current.get("status"), (body or {}).get("status", {}))
            return 200, self._store({**copy.deepcopy(current), "status": status})
        return 405, status_body(405, "MethodNotAllowed", f"{method} {match.string}")

    def _watch(self, request: Handler, plural: str, namespace: str | None,
               query: dict[str, str]) -> None:  # fmt: skip
        since = int(query.get("resourceVersion") or 0)
        deadline = time.monotonic() + int(query.get("timeoutSeconds") or 1800)
        with self._changed:
            while plural in self._held and not self._closing:
                self._changed.wait(0.5)
            if since < self._compacted.get(plural, 0):
                gone = status_body(410, "Expired", f"too old resource version: {since} "
                                   f"({self._compacted[plural]})")  # fmt: skip
                if self.gone_as_http:
                    request.reply(410, gone)
                    return
                request.start_stream()
                request.chunk({"type": "ERROR", "object": gone})
                request.finish_stream()
                return
            stream = Stream(plural, namespace, since, query.get("allowWatchBookmarks") == "true")
            self._streams.add(stream)
        request.start_stream()
        try:
            self._serve_stream(request, stream, query, deadline)
        except OSError:
            pass  # the client went away
        finally:
            with self._changed:
                self._streams.discard(stream)
                self._changed.notify_all()

    def _serve_stream(self, request: Handler, stream: Stream, query: dict[str, str],
                      deadline: float) -> None:  # fmt: skip
        api_version, kind, _ = RESOURCES[stream.plural]
        while True:
            with self._changed:
                while True:
                    changes = [c for c in self._history if c.version > stream.cursor
                               and c.plural == stream.plural and c.plural not in self._held
                               and self._visible(c.plural, stream.namespace, query, c.obj)]  # fmt: skip
                    left = deadline - time.monotonic()
                    if changes or stream.bookmark_due or stream.ending or self._closing or left <= 0:
                        break
                    self._changed.wait(min(left, 0.5))
                bookmark = self._version if stream.bookmark_due else None
                stream.bookmark_due = False
                ending = stream.ending or ("drop" if self._closing else None)
                if ending == "drop":  # a cut connection delivers nothing more
                    request.drop()
                    return
                if changes:
                    stream.cursor = changes[-1].version
            for change in changes:
                request.chunk({"type": change.type, "object": change.obj})
            if bookmark is not None:
                stream.cursor = max(stream.cursor, bookmark)
                request.chunk({"type": "BOOKMARK", "object": {
                    "kind": kind, "apiVersion": api_version,
                    "metadata": {"resourceVersion": str(bookmark)}}})  # fmt: skip
            if ending == "end" or time.monotonic() >= deadline:
                request.finish_stream()
                return


