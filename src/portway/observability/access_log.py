"""The access log: one line per request, formatted on the event loop, written by a thread.

When an exchange ends its entry (raw values) is kept; ``FORMAT_DELAY`` later, or once
``MAX_PENDING`` entries wait, the entries are formatted together (JSON, Apache common or combined)
and appended to a list; every ``HANDOFF`` lines, and at each sweep, the list is handed to the
writer thread, which joins and writes it. The delay takes the formatting out of the path between a
response arriving and the next one going out: when responses come in bursts (many clients waiting
on the same slow backend), the last response of a burst no longer waits for the log lines of all
the others, and the lines are formatted in the quiet after the burst, in one loop that keeps its
code hot. Small hand-overs keep the writer's bursts short: it shares the worker's
CPU, and a writer that has slept for a second has the scheduler's better claim to it, so a
second's lines written in one go (milliseconds of work) could hold the loop up for as long. (In
the benchmark with a 10 ms backend this made no difference measurable through the noise; the
bound on a stall is the reason.) The
formatting is a couple of microseconds (JSON is hand-assembled, not ``json.dumps`` of a dict):
done by a thread it would cost more, as the thread must take the GIL from the event loop, and a
second's worth of lines formatted in one go (compiled code does not yield the GIL) stalls the loop
for as long. What is never logged: the query string (it carries API keys and tokens), nor the
Referer's query and fragment, request headers other than User-Agent and Referer, cookies and
Authorization.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, Final, NamedTuple

from portway.config.observability import AccessLogConfig
from portway.messages import Request

log: Final = logging.getLogger("portway.access_log")

# Lines in a batch handed to the writer thread: a burst of ~50 µs, a wake-up per 128 lines.
HANDOFF: Final = 128
# Seconds an entry waits before it is formatted: long enough for a burst of responses and the
# requests that follow them to be through (a burst of 50 takes about a millisecond), short enough
# that few entries pile up under full load (about 100 at 50,000 requests/s).
FORMAT_DELAY: Final = 0.002
# Entries waiting at most: past it they are formatted at once, whatever the delay.
MAX_PENDING: Final = 128
# Characters handed over and not yet written, at most (some 100,000 JSON lines); past it, dropped.
MAX_BACKLOG: Final = 32 << 20


# (method, host, path, User-Agent, Referer) of a request, for an access log line
RequestSummary = tuple[str, str, str, str, str]


def summarize(request: Request) -> RequestSummary:
    """What a line needs of ``request``, as plain strings (User-Agent and Referer "" if absent)."""
    user_agent = referer = ""
    for key, value in request.headers:
        size = len(key)
        if size == 10 or size == 7:  # only "user-agent" and "referer" have these lengths here
            name = key.lower()
            if name == b"user-agent":
                user_agent = value.decode("latin-1")
            elif name == b"referer":
                referer = value.decode("latin-1")
    return request.method, request.host, request.path, user_agent, referer


class Entry(NamedTuple):
    """What the hot path hands over: raw values only; the writer thread derives the rest."""

    start: float  # monotonic time the exchange began
    end: float  # monotonic time it ended
    sent: float  # monotonic time the request went upstream; 0: never
    first_byte: float  # monotonic time the response head arrived; 0: never
    connect: float  # seconds spent opening a new upstream connection; 0: a pooled one was used
    # method, host, path, User-Agent and Referer: a Request, or a RequestSummary of them (what the
    # data plane hands over: plain strings, nothing the garbage collector has to follow)
    request: Request | RequestSummary | None
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
    consumer: str = ""  # who an authentication policy found the client to be
    trace_id: str = ""  # W3C trace id (32 hex digits) the request was given or continued


# What ``AccessLog.add`` takes: an ``Entry`` or a plain tuple laid out like one.
EntryTuple = tuple[
    float,
    float,
    float,
    float,
    float,
    Request | RequestSummary | None,
    str,
    int,
    int,
    int,
    str,
    str,
    str,
    int,
    str,
    str,
    str,
    str,
    str,
]


class AccessLog:
    def __init__(
        self, config: AccessLogConfig, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        """``loop``: the worker's loop, which runs the delayed formatting; without one, each entry
        is formatted as it is added."""
        self.format = config.format
        self.path = config.path
        self.sample_rate = config.sample_rate
        self.sampling = config.sample_rate < 1.0
        self._render: Renderer = _RENDERERS[config.format]
        self._json = config.format == "json"
        self._clock = _Clock()
        # Wall clock minus monotonic clock, renewed at each flush: lines carry dates, exchanges
        # monotonic times.
        self._offset = time.time() - time.monotonic()
        self._loop = loop
        self._max_pending = MAX_PENDING if loop is not None else 1
        self._pending: list[EntryTuple] = []  # entries not formatted yet
        self._timer: asyncio.TimerHandle | None = None  # formats _pending
        self._batch: list[str] = []
        # (lines, their size in characters); None: stop
        self._queue: queue.SimpleQueue[tuple[list[str], int] | None] = queue.SimpleQueue()
        self._random = random.random
        # Characters handed over, and characters the writer is done with: what is between them
        # waits in the queue. A sink that stops taking data (a full disk, a stderr pipe nobody
        # reads) must not make the gateway's memory grow: past MAX_BACKLOG, batches are dropped
        # and counted. (Two counters, each written by one thread only: no lost updates.)
        self._handed = 0
        self._written = 0
        self.dropped = 0
        self._writer = threading.Thread(target=self._write_loop, name="access-log", daemon=True)
        self._writer.start()

    def add(self, entry: EntryTuple) -> None:
        """Log one request. ``entry`` may be a plain tuple laid out as ``Entry`` (the hot path
        builds those: a NamedTuple costs a Python-level ``__new__`` per request)."""
        if self.sampling and entry[7] < 500 and self._random() >= self.sample_rate:
            return
        pending = self._pending
        pending.append(entry)
        if len(pending) >= self._max_pending:
            self._format_pending()
        elif self._timer is None:
            loop = self._loop
            assert loop is not None  # without a loop every entry is formatted at once
            self._timer = loop.call_later(FORMAT_DELAY, self._format_pending)

    def _format_pending(self) -> None:
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
        pending = self._pending
        if not pending:
            return
        self._pending = []
        batch = self._batch
        offset = self._offset
        clock = self._clock
        if self._json:  # called directly: compiled, the entry is not boxed into a tuple object
            for entry in pending:
                batch.append(_json(entry, offset, clock))
        else:
            render = self._render
            for entry in pending:
                batch.append(render(entry, offset, clock))
        if len(batch) >= HANDOFF:
            self._hand_over()

    def flush(self) -> None:
        """Format what waits and hand the lines gathered since the last hand-over to the writer
        (called by the sweeper), then renew the wall-clock offset."""
        self._format_pending()
        self._offset = time.time() - time.monotonic()
        if self._batch:
            self._hand_over()

    def _hand_over(self) -> None:
        batch = self._batch
        self._batch = []
        size = 0
        for line in batch:
            size += len(line)
        if self.backlog + size > MAX_BACKLOG:
            if not self.dropped:
                log.error("the access log cannot keep up with its sink: dropping lines")
            self.dropped += len(batch)
            return
        self._handed += size
        self._queue.put((batch, size))

    @property
    def backlog(self) -> int:
        """Characters handed to the writer and not yet written."""
        return self._handed - self._written

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._writer.join(5.0)

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
        failing = False  # log a failing sink once, not once per batch
        while True:
            item = self._queue.get()
            if item is None:
                break
            batch, size = item
            try:
                stream.write("".join(batch))
                if self._queue.empty():  # written through when the buffer fills, else now
                    stream.flush()
                failing = False
            except (OSError, ValueError) as exc:  # a full disk must not stop the gateway
                if not failing:
                    log.error("access log write failed, lines are lost until it works: %s", exc)
                failing = True
            finally:
                self._written += size
        if stream is not sys.stderr:
            # The buffered tail of a broken sink is lost, as its lines were.
            with contextlib.suppress(OSError):
                stream.close()


_encode_string: Final[Callable[[str], str]] = (
    getattr(json.encoder, "c_encode_basestring_ascii", None) or json.encoder.encode_basestring_ascii
)


class _Clock:
    """ISO 8601 UTC dates with milliseconds, remembered: lines come in time order, many in the
    same millisecond."""

    __slots__ = ("_millis", "_prefix", "_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""  # "YYYY-MM-DDTHH:MM:SS." of _second
        self._millis = -1
        self._text = ""

    def iso(self, seconds: float) -> str:
        millis = int(seconds * 1000)
        if millis == self._millis:
            return self._text
        whole = millis // 1000
        if whole != self._second:
            self._second = whole
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole))
        text = self._prefix + str(millis - whole * 1000 + 1000)[1:] + "Z"
        self._millis = millis
        self._text = text
        return text


def _ms(seconds: float) -> str:
    """A duration in milliseconds with three decimals, as ``repr(round(seconds * 1000, 3))``
    writes it ("0.6", "12.345", "1.0"), from whole microseconds: no float formatting, and one
    f-string per case rather than slicing and stripping a padded string (a third cheaper
    compiled). (Computed: a table of the 1,000 fractions was cheaper in a loop, but under load
    each lookup touched a string out of the cache, which cost more.)"""
    micros = int(seconds * 1_000_000 + 0.5) if seconds >= 0 else -int(-seconds * 1_000_000 + 0.5)
    if micros < 0:
        return "-" + _ms(-seconds)
    whole = micros // 1000
    fraction = micros - whole * 1000
    if not fraction:
        return f"{whole}.0"
    if fraction % 10:  # three decimals
        if fraction >= 100:
            return f"{whole}.{fraction}"
        if fraction >= 10:
            return f"{whole}.0{fraction}"
        return f"{whole}.00{fraction}"
    if fraction % 100:  # two
        tens = fraction // 10
        return f"{whole}.{tens}" if tens >= 10 else f"{whole}.0{tens}"
    return f"{whole}.{fraction // 100}"


def _parts(entry: EntryTuple) -> RequestSummary:
    """method, host, path, user agent, referer of an entry's request ("" without one)."""
    request = entry[5]
    if request is None:
        return "", "", "", "", ""
    if isinstance(request, tuple):
        return request
    return summarize(request)


def _referer(referer: str) -> str:
    """A Referer as logged: without its query and fragment, which carry API keys and tokens
    (``?api_key=``, ``#access_token=``) like the request's own query, also never logged."""
    end = referer.find("?")
    fragment = referer.find("#")
    if fragment >= 0 and (end < 0 or fragment < end):
        end = fragment
    return referer if end < 0 else referer[:end]


def _fields(entry: EntryTuple, wall_offset: float) -> dict[str, Any]:
    """The logged fields of an entry, in log order (JSON values)."""
    start, end, sent, first_byte, connect = entry[0], entry[1], entry[2], entry[3], entry[4]
    method, host, path, user_agent, referer = _parts(entry)
    return {
        "time": start + wall_offset,
        "request_id": entry[16],
        "client_ip": entry[15],
        "method": method,
        "host": host,
        "path": path,
        "http_version": entry[6],
        "status": entry[7],
        "bytes_in": entry[8],
        "bytes_out": entry[9],
        "route": entry[10],
        "service": entry[11],
        "instance": entry[12],
        "connect_ms": round(connect * 1000, 3) if connect else -1.0,
        "first_byte_ms": round((first_byte - sent) * 1000, 3) if first_byte and sent else -1.0,
        "total_ms": round((end - start) * 1000, 3) if end and start else -1.0,
        "retries": entry[13],
        "cause": entry[14],
        "consumer": entry[17],
        "trace_id": entry[18],
        "user_agent": user_agent,
        "referer": _referer(referer),
    }


_QUOTED_LIMIT: Final = 4096
# String -> its JSON form. Most logged strings repeat (method, host, route, service, instance,
# cause, user agent, path): one dict lookup instead of an escape pass and a new string. Bounded,
# filled as strings come.
_quoted: Final[dict[str, str]] = {}


def _quote_json(text: str) -> str:
    quoted = _quoted.get(text)
    if quoted is None:
        quoted = _encode_string(text)
        if len(_quoted) < _QUOTED_LIMIT:
            _quoted[text] = quoted
    return quoted


def _json(entry: EntryTuple, wall_offset: float, clock: _Clock) -> str:
    """One JSON object and a newline: the fields of ``_fields`` in that order, as
    ``json.dumps(separators=(",", ":"))`` writes them (strings through the same escaping), but
    assembled by hand, several times faster: one f-string, which builds the line in one go (a
    fifth cheaper than joining a list of its pieces). The request id needs no escaping: it is
    either minted here (hex) or a client's that passed ``forward.valid_request_id`` (no quote,
    backslash or control character); the trace id is hex digits."""
    start: float = entry[0]
    end: float = entry[1]
    sent: float = entry[2]
    first_byte: float = entry[3]
    connect: float = entry[4]
    method, host, path, user_agent, referer = _parts(entry)
    connect_ms = _ms(connect) if connect else "-1.0"
    first_byte_ms = _ms(first_byte - sent) if first_byte and sent else "-1.0"
    total_ms = _ms(end - start) if end and start else "-1.0"
    return (
        f'{{"time":"{clock.iso(start + wall_offset)}","request_id":"{entry[16]}",'
        f'"client_ip":{_quote_json(entry[15])},"method":{_quote_json(method)},'
        f'"host":{_quote_json(host)},"path":{_quote_json(path)},'
        f'"http_version":{_quote_json(entry[6])},"status":{entry[7]},"bytes_in":{entry[8]},'
        f'"bytes_out":{entry[9]},"route":{_quote_json(entry[10])},'
        f'"service":{_quote_json(entry[11])},"instance":{_quote_json(entry[12])},'
        f'"connect_ms":{connect_ms},"first_byte_ms":{first_byte_ms},"total_ms":{total_ms},'
        f'"retries":{entry[13]},"cause":{_quote_json(entry[14])},'
        f'"consumer":{_quote_json(entry[17])},"trace_id":"{entry[18]}",'
        f'"user_agent":{_quote_json(user_agent)},"referer":{_quote_json(_referer(referer))}}}\n'
    )


def _common(entry: EntryTuple, wall_offset: float, clock: _Clock) -> str:
    return _common_line(_fields(entry, wall_offset))


def _combined(entry: EntryTuple, wall_offset: float, clock: _Clock) -> str:
    fields = _fields(entry, wall_offset)
    return (
        _common_line(fields)[:-1]
        + f' "{_quote(fields["referer"]) or "-"}" "{_quote(fields["user_agent"]) or "-"}"\n'
    )


def _common_line(fields: dict[str, Any]) -> str:
    size = str(fields["bytes_out"]) if fields["bytes_out"] else "-"
    return (
        f"{fields['client_ip'] or '-'} - {fields['consumer'] or '-'} "
        f"[{_clf_time(fields['time'])}] "
        f'"{fields["method"]} {_quote(fields["path"])} HTTP/{fields["http_version"]}" '
        f"{fields['status']} {size}\n"
    )


def _quote(text: str) -> str:
    """Apache escapes quotes and backslashes in logged strings; so do we, and control chars."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return "".join(
        "\\" + c if c in '"\\' else c if c.isprintable() else f"\\x{ord(c):02x}" for c in text
    )


def _clf_time(seconds: float) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(seconds))


Renderer = Callable[[EntryTuple, float, _Clock], str]
_RENDERERS: Final[dict[str, Renderer]] = {"json": _json, "common": _common, "combined": _combined}
