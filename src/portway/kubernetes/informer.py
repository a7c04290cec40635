"""One kind's objects kept current from the API server: list, then watch from the list's version.

The protocol (Kubernetes "API concepts: efficient detection of changes"):

1. **List** the collection (one namespace's, or every namespace's), in pages of ``PAGE`` objects.
   The list's ``metadata.resourceVersion`` is the version the store now reflects. Objects no
   longer listed are dropped: a re-list replaces the store, so nothing deleted meanwhile lingers.
2. **Watch** from that version with ``allowWatchBookmarks=true`` and ``timeoutSeconds``: a
   chunked stream of one JSON event per line. ADDED and MODIFIED store the object, DELETED drops
   it, each moving the version to the object's; a BOOKMARK only moves the version (the server
   says "nothing for you up to here", so a reconnection does not replay a long history).
3. When the server ends the stream (``timeoutSeconds``), watch again from the version reached.
   **410 Gone**, as the HTTP status or as an ERROR event with code 410, means the version is
   older than the server's history: list again. Any other failure (a refused or dropped
   connection, a 5xx, a stream cut mid-line) reconnects after an exponential backoff with
   jitter, and resumes from the version reached, so no event is lost and none is applied twice.

List items come without ``kind`` and ``apiVersion``; the store adds them, so an object reads as
its manifest would and ``parse`` treats both modes alike. Every change calls ``on_change``;
debouncing is the caller's business.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2

from portway.kubernetes.api import REQUEST_TIMEOUT, Kind

log = logging.getLogger("portway.kubernetes")

RawObject = dict[str, Any]
StoreKey = tuple[str, str]  # namespace ("" for cluster-scoped kinds), name
PAGE = 500
WATCH_TIMEOUT = 300  # seconds the server keeps a watch open; then the watch is renewed


class Gone(Exception):
    """410: the version asked for is older than the server's history; list again."""


class ApiFailure(Exception):
    """An answer that is neither the data nor 410: retried with backoff."""


# Failures of the network or of the server: logged as a line. Anything else is a bug, logged with
# its traceback, and retried all the same.
EXPECTED = (httpx2.HTTPError, ApiFailure, OSError, ValueError, KeyError, TypeError)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with "equal jitter": between half and all of ``base * 2**(n-1)``,
    at most ``cap`` seconds. Jitter keeps replicas (and kinds) from reconnecting in step."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        ceiling = min(self.cap, self.base * 2 ** max(0, failures - 1))
        return random.uniform(ceiling / 2, ceiling)


def key_of(raw: RawObject) -> StoreKey:
    metadata = raw.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


def version_of(raw: RawObject) -> str | None:
    value = (raw.get("metadata") or {}).get("resourceVersion")
    return str(value) if value is not None else None


class Informer:
    """The store of one kind, kept by ``run`` (module docstring)."""

    def __init__(
        self,
        http: httpx2.AsyncClient,
        kind: Kind,
        namespace: str | None,
        on_change: Callable[[], None],
        backoff: Backoff = Backoff(),
        watch_timeout: int = WATCH_TIMEOUT,
    ) -> None:
        self.http, self.kind, self.namespace = http, kind, namespace
        self.on_change = on_change
        self.backoff = backoff
        self.watch_timeout = watch_timeout
        self.objects: dict[StoreKey, RawObject] = {}
        self.resource_version: str | None = None
        self.synced = asyncio.Event()
        self.lists = 0  # how often the collection was listed (the first time included)
        self.bookmarks = 0
        self.failures = 0  # consecutive failures; 0 once a watch is established

    @property
    def path(self) -> str:
        return self.kind.path(self.namespace)

    async def run(self) -> None:
        """List and watch until cancelled."""
        while True:
            started = time.monotonic()
            try:
                if self.resource_version is None:
                    await self._list()
                await self._watch()
                if time.monotonic() - started < 1.0:  # ended at once: do not spin
                    await asyncio.sleep(self.backoff.base)
            except Gone as exc:
                log.info("%s: %s; listing again", self.kind.name, exc)
                self.resource_version = None
            except Exception as exc:  # whatever it was, the kind must not stop being watched
                self.failures += 1
                delay = self.backoff.delay(self.failures)
                expected = isinstance(exc, EXPECTED)
                log.log(logging.WARNING if expected else logging.ERROR,
                        "%s %s: %s; retrying in %.1fs", self.kind.name,
                        "watch" if self.synced.is_set() else "list", _describe(exc), delay,
                        exc_info=not expected)  # fmt: skip
                await asyncio.sleep(delay)

    async def _list(self) -> None:
        fresh: dict[StoreKey, RawObject] = {}
        params: dict[str, str] = {"limit": str(PAGE)}
        if self.kind.field_selector:
            params["fieldSelector"] = self.kind.field_selector
        while True:
            response = await self.http.get(self.path, params=params)
            if response.status_code == 410:  # a continue token expired: start over
                raise Gone(f"list page expired: {_message(response.content)}")
            if response.status_code != 200:
                raise ApiFailure(f"{response.status_code} {_message(response.content)}")
            body = response.json()
            metadata = body.get("metadata") or {}
            for item in body.get("items") or []:
                fresh[key_of(item)] = self._complete(item)
            token = metadata.get("continue")
            if not token:
                break
            params["continue"] = str(token)
        changed = fresh != self.objects
        self.objects = fresh
        self.resource_version = str(metadata["resourceVersion"])
        self.lists += 1
        log.debug("%s: listed %d at version %s", self.kind.name, len(fresh), self.resource_version)
        if changed or not self.synced.is_set():
            self.synced.set()
            self.on_change()

    async def _watch(self) -> None:
        assert self.resource_version is not None
        params = {
            "watch": "true",
            "resourceVersion": self.resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.watch_timeout),
        }
        if self.kind.field_selector:
            params["fieldSelector"] = self.kind.field_selector
        # Silence longer than the server's own timeout means the connection is gone.
        timeout = httpx2.Timeout(REQUEST_TIMEOUT, read=self.watch_timeout + 30.0)
        async with self.http.stream("GET", self.path, params=params, timeout=timeout) as response:
            if response.status_code == 410:
                raise Gone(f"410 {_message(await response.aread())}")
            if response.status_code != 200:
                raise ApiFailure(f"{response.status_code} {_message(await response.aread())}")
            self.failures = 0
            async for line in response.aiter_lines():
                if line.strip():
                    self._apply(json.loads(line))

    def _apply(self, event: dict[str, Any]) -> None:
        kind, obj = event["type"], event["object"]
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone(f"410 {obj.get('message', 'Gone')}")
            raise ApiFailure(f"{obj.get('code')} {obj.get('message', '')}")
        version = version_of(obj)
        if kind == "BOOKMARK":
            self.bookmarks += 1
        elif kind in ("ADDED", "MODIFIED"):
            self.objects[key_of(obj)] = self._complete(obj)
        elif kind == "DELETED":
            self.objects.pop(key_of(obj), None)
        else:
            log.debug("%s: watch event %r ignored", self.kind.name, kind)
            return
        if version is not None:
            self.resource_version = version
        if kind != "BOOKMARK":
            self.on_change()

    def _complete(self, raw: RawObject) -> RawObject:
        return {"apiVersion": self.kind.api_version, "kind": self.kind.name, **raw}


def _message(body: bytes) -> str:
    """The ``message`` of a Status body, else the body's start."""
    try:
        status = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    return str(status.get("message", "")) if isinstance(status, dict) else str(status)[:200]


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
