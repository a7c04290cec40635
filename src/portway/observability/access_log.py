"""The access log: one line per request, formatted and written by a thread, not the event loop.

The hot path appends one tuple of already-known values to a list; at each sweep the list is handed
to the writer thread, which formats (JSON, Apache common or combined) and writes. What is never
logged: the query string (it carries API keys and tokens), request headers other than User-Agent
and Referer, cookies and Authorization.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import random
import sys
import threading
import time
from typing import IO, Any, NamedTuple

from portway.config.observability import AccessLogConfig
from portway.messages import Request

log = logging.getLogger("portway.access_log")

MAX_BACKLOG = 64  # batches (about one per sweep, at most a second each) waiting for the writer


class Entry(NamedTuple):
    """What the hot path hands over: raw values only; the writer thread derives the rest."""

    start: float  # monotonic time the exchange began
    end: float  # monotonic time it ended
    sent: float  # monotonic time the request went upstream; 0: never
    first_byte: float  # monotonic time the response head arrived; 0: never
    connect: float  # seconds spent opening a new upstream connection; 0: a pooled one was used
    request: Request | None  # request id, client, method, host, path, User-Agent, Referer
    http_version: str
    status: int
    bytes_in: int  # request body bytes
    bytes_out: int  # response bytes written, head included
    route: str
    service: str
    instance: str
    retries: int
    cause: str  # portway-error of a local answer, "" otherwise
    client_ip: str
    request_id: str


class AccessLog:
    def __init__(self, config: AccessLogConfig) -> None:
        self.format = config.format
        self.path = config.path
        self.sample_rate = config.sample_rate
        self._batch: list[Entry] = []
        # (entries, wall clock minus monotonic clock at hand-over): the writer turns times to dates
        self._queue: queue.SimpleQueue[tuple[list[Entry], float] | None] = queue.SimpleQueue()
        self._random = random.random
        # Batches handed over and not yet written. A sink that stops taking data (a full disk, a
        # stderr pipe nobody reads) must not make the gateway's memory grow: past the bound,
        # batches are dropped and counted.
        self._backlog = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._write_loop, name="access-log", daemon=True)
        self._thread.start()

    def add(self, entry: Entry) -> None:
        if self.sample_rate < 1.0 and entry.status < 500 and self._random() >= self.sample_rate:
            return
        self._batch.append(entry)

    def flush(self) -> None:
        """Hand the lines gathered since the last flush to the writer (called by the sweeper)."""
        if self._batch:
            batch, self._batch = self._batch, []
            if self._backlog >= MAX_BACKLOG:
                if not self.dropped:
                    log.error("the access log cannot keep up with its sink: dropping lines")
                self.dropped += len(batch)
                return
            self._backlog += 1
            self._queue.put((batch, time.time() - time.monotonic()))

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(5.0)

    def _write_loop(self) -> None:
        stream: IO[str]
        if self.path == "-":
            stream = sys.stderr
        else:
            try:
                stream = open(self.path, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115
            except OSError as exc:
                log.error("cannot open the access log %s (%s): writing to stderr", self.path, exc)
                stream = sys.stderr
        render = _RENDERERS[self.format]
        failing = False  # log a failing sink once, not once per batch
        while True:
            item = self._queue.get()
            if item is None:
                break
            batch, offset = item
            try:
                stream.write("".join(render(_fields(entry, offset)) for entry in batch))
                stream.flush()
                failing = False
            except (OSError, ValueError) as exc:  # a full disk must not stop the gateway
                if not failing:
                    log.error("access log write failed, lines are lost until it works: %s", exc)
                failing = True
            finally:
                self._backlog -= 1
        if stream is not sys.stderr:
            # The buffered tail of a broken sink is lost, as its lines were.
            with contextlib.suppress(OSError):
                stream.close()


def _fields(entry: Entry, wall_offset: float) -> dict[str, Any]:
    """The logged fields of an entry, in log order."""
    request = entry.request
    user_agent, referer = _agent_and_referer(request)

    def ms(later: float, earlier: float) -> float:
        return round((later - earlier) * 1000, 3) if later and earlier else -1.0

    return {
        "time": entry.start + wall_offset,
        "request_id": entry.request_id,
        "client_ip": entry.client_ip,
        "method": request.method if request else "",
        "host": request.host if request else "",
        "path": request.path if request else "",
        "http_version": entry.http_version,
        "status": entry.status,
        "bytes_in": entry.bytes_in,
        "bytes_out": entry.bytes_out,
        "route": entry.route,
        "service": entry.service,
        "instance": entry.instance,
        "connect_ms": round(entry.connect * 1000, 3) if entry.connect else -1.0,
        "first_byte_ms": ms(entry.first_byte, entry.sent),
        "total_ms": ms(entry.end, entry.start),
        "retries": entry.retries,
        "cause": entry.cause,
        "user_agent": user_agent,
        "referer": referer,
    }


def _agent_and_referer(request: Request | None) -> tuple[str, str]:
    user_agent = referer = ""
    if request is not None:
        for key, value in request.headers:
            if len(key) in (7, 10):  # only "referer" and "user-agent" have these lengths here
                name = key.lower()
                if name == b"user-agent":
                    user_agent = value.decode("latin-1")
                elif name == b"referer":
                    referer = value.decode("latin-1")
    return user_agent, referer


_encode = json.JSONEncoder(separators=(",", ":")).encode  # built once: dumps() builds one per call


def _json(fields: dict[str, Any]) -> str:
    fields["time"] = _iso(fields["time"])
    return _encode(fields) + "\n"


def _common(fields: dict[str, Any]) -> str:
    size = str(fields["bytes_out"]) if fields["bytes_out"] else "-"
    return (
        f"{fields['client_ip'] or '-'} - - [{_clf_time(fields['time'])}] "
        f'"{fields["method"]} {_quote(fields["path"])} HTTP/{fields["http_version"]}" '
        f"{fields['status']} {size}\n"
    )


def _combined(fields: dict[str, Any]) -> str:
    return (
        _common(fields)[:-1]
        + f' "{_quote(fields["referer"]) or "-"}" "{_quote(fields["user_agent"]) or "-"}"\n'
    )


def _quote(text: str) -> str:
    """Apache escapes quotes and backslashes in logged strings; so do we, and control chars."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return "".join(
        "\\" + c if c in '"\\' else c if c.isprintable() else f"\\x{ord(c):02x}" for c in text
    )


_iso_second: list[Any] = [-1, ""]  # the last whole second formatted: lines come in time order


def _iso(seconds: float) -> str:
    whole = int(seconds)
    if whole != _iso_second[0]:
        _iso_second[0] = whole
        _iso_second[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_iso_second[1]}.{int(seconds * 1000) % 1000:03d}Z"


def _clf_time(seconds: float) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(seconds))


_RENDERERS = {"json": _json, "common": _common, "combined": _combined}
