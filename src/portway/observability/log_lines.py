"""The lines of the access log: what the hot path hands over (``Entry``) and how it is written.

Three formats: JSON (every field, assembled by hand: several times faster than ``json.dumps`` of a
dict, and equal to it, see ``fields``), and Apache's ``common`` and ``combined``. What most lines
repeat (the date of the millisecond, the client's fields, the request's way) is formatted once and
remembered (``Repeats``). What is never logged: the query string (it carries API keys and tokens),
nor the Referer's query and fragment, request headers other than User-Agent and Referer, cookies
and Authorization.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Final, NamedTuple


class Entry(NamedTuple):
    """What the hot path hands over: raw values only; the formatting derives the rest. Fields from
    ``client_ip`` on mostly repeat from one request to the next (the same client, route and
    instance): a JSON line writes them as two pieces formatted once and remembered."""

    start: float  # monotonic time the exchange began
    end: float  # monotonic time it ended
    sent: float  # monotonic time the request went upstream; 0: never
    first_byte: float  # monotonic time the response head arrived; 0: never
    connect: float  # seconds spent opening a new upstream connection; 0: a pooled one was used
    path: str  # normalized, without the query ("" for a request that never got one)
    status: int
    bytes_in: int  # request body bytes
    bytes_out: int  # response bytes written, head included
    retries: int
    request_id: str
    trace_id: str  # W3C trace id (32 hex digits) the request was given or continued; "" if none
    # the client: its address, who an authentication policy found it to be, User-Agent and
    # Referer as received (bytes, b"" when absent: decoded only when first formatted)
    client_ip: str
    consumer: str
    user_agent: bytes
    referer: bytes
    # the request's way
    method: str
    host: str
    http_version: str
    route: str
    service: str
    instance: str
    cause: str  # portway-error of a local answer, "" otherwise


# What ``AccessLog.add`` takes: an ``Entry`` or a plain tuple laid out like one.
EntryTuple = tuple[
    float,
    float,
    float,
    float,
    float,
    str,
    int,
    int,
    int,
    int,
    str,
    str,
    str,
    str,
    bytes,
    bytes,
    str,
    str,
    str,
    str,
    str,
    str,
    str,
]


_encode_string: Final[Callable[[str], str]] = (
    getattr(json.encoder, "c_encode_basestring_ascii", None) or json.encoder.encode_basestring_ascii
)


class Repeats:
    """What lines repeat, formatted once and remembered.

    * The date: lines come in time order, many in the same millisecond.
    * Two pieces of a JSON line: the client's fields, and the request's way (method to cause).
      The last of each is compared first, field by field (requests in a row mostly share them:
      a few comparisons instead of a key, its hash and a lookup), then a dict of those seen,
      bounded: emptied when full, so that a gateway whose clients keep changing keeps the pieces
      of those it sees now.
    """

    __slots__ = (
        "_cause",
        "_client",
        "_client_ip",
        "_clients",
        "_consumer",
        "_host",
        "_instance",
        "_method",
        "_millis",
        "_prefix",
        "_referer",
        "_route",
        "_second",
        "_service",
        "_text",
        "_user_agent",
        "_version",
        "_way",
        "_ways",
    )

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""  # "YYYY-MM-DDTHH:MM:SS." of _second
        self._millis = -1
        self._text = ""
        self._clients: dict[tuple[str, str, bytes, bytes], str] = {}
        self._client_ip = self._consumer = self._client = ""
        self._user_agent = self._referer = b""
        self._ways: dict[tuple[str, str, str, str, str, str, str], str] = {}
        self._method = self._host = self._version = self._route = ""
        self._service = self._instance = self._cause = self._way = ""

    def iso(self, seconds: float) -> str:
        """An ISO 8601 UTC date with milliseconds."""
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

    def client(self, client_ip: str, consumer: str, user_agent: bytes, referer: bytes) -> str:
        """``"client_ip":…,"consumer":…,"user_agent":…,"referer":…,`` of a JSON line."""
        if (
            self._client
            and client_ip == self._client_ip
            and user_agent == self._user_agent
            and consumer == self._consumer
            and referer == self._referer
        ):
            return self._client
        key = (client_ip, consumer, user_agent, referer)
        piece = self._clients.get(key)
        if piece is None:
            piece = (
                f'"client_ip":{_quote_json(client_ip)},"consumer":{_quote_json(consumer)},'
                f'"user_agent":{_quote_json(user_agent.decode("latin-1"))},'
                f'"referer":{_quote_json(_referer(referer.decode("latin-1")))},'
            )
            _keep(self._clients, key, piece)
        self._client_ip, self._consumer = client_ip, consumer
        self._user_agent, self._referer = user_agent, referer
        self._client = piece
        return piece

    def way(
        self,
        method: str,
        host: str,
        version: str,
        route: str,
        service: str,
        instance: str,
        cause: str,
    ) -> str:
        """``"method":…,"host":…,"http_version":…,"route":…,"service":…,"instance":…,"cause":…,``
        of a JSON line."""
        if (
            self._way
            and instance == self._instance
            and route == self._route
            and host == self._host
            and method == self._method
            and service == self._service
            and version == self._version
            and cause == self._cause
        ):
            return self._way
        key = (method, host, version, route, service, instance, cause)
        piece = self._ways.get(key)
        if piece is None:
            piece = (
                f'"method":{_quote_json(method)},"host":{_quote_json(host)},'
                f'"http_version":{_quote_json(version)},"route":{_quote_json(route)},'
                f'"service":{_quote_json(service)},"instance":{_quote_json(instance)},'
                f'"cause":{_quote_json(cause)},'
            )
            _keep(self._ways, key, piece)
        self._method, self._host, self._version, self._route = method, host, version, route
        self._service, self._instance, self._cause = service, instance, cause
        self._way = piece
        return piece


_PIECES_LIMIT: Final = 4096


def _keep(pieces: dict[Any, str], key: object, piece: str) -> None:
    """Remember ``piece``; a full dict is emptied first (those seen lately come back)."""
    if len(pieces) >= _PIECES_LIMIT:
        pieces.clear()
    pieces[key] = piece


def _fraction(thousandths: int) -> str:
    """How ``repr`` ends a number with these thousandths: ".0", ".5", ".25", ".125", ".007"."""
    return "." + (f"{thousandths:03d}".rstrip("0") or "0")


# Numbers a line writes most, as text drawn up once: a lookup instead of formatting an integer
# (about 180 instructions compiled). Status codes and whole milliseconds are mostly below 1,000,
# retries and request body sizes mostly 0; the fraction of a millisecond always is.
_SMALL: Final = 1000
_INTEGERS: Final[tuple[str, ...]] = tuple(str(number) for number in range(_SMALL))
_FRACTIONS: Final[tuple[str, ...]] = tuple(_fraction(thousandths) for thousandths in range(_SMALL))


def _integer(number: int) -> str:
    return _INTEGERS[number] if 0 <= number < _SMALL else str(number)


def _ms(seconds: float) -> tuple[str, str]:
    """A duration in milliseconds with three decimals, as ``repr(round(seconds * 1000, 3))``
    writes it ("0.6", "12.345", "1.0"), in two parts: whole milliseconds and fraction ("12",
    ".345"), from whole microseconds. Compiled, a tuple of two strings is a C struct, not an
    object, and the two parts go into the line as they are: no float formatting, no string made
    for the number (an f-string per case of trailing zeros cost 1,100 instructions a call,
    callgrind)."""
    micros = int(seconds * 1_000_000 + 0.5) if seconds >= 0 else -int(-seconds * 1_000_000 + 0.5)
    if micros < 0:
        whole, fraction = _ms(-seconds)
        return "-" + whole, fraction
    whole_ms = micros // 1000
    return _integer(whole_ms), _FRACTIONS[micros - whole_ms * 1000]


_NONE: Final = ("-1", ".0")  # a duration that does not apply: -1.0


def _referer(referer: str) -> str:
    """A Referer as logged: without its query and fragment, which carry API keys and tokens
    (``?api_key=``, ``#access_token=``) like the request's own query, also never logged."""
    end = referer.find("?")
    fragment = referer.find("#")
    if fragment >= 0 and (end < 0 or fragment < end):
        end = fragment
    return referer if end < 0 else referer[:end]


def fields(entry: EntryTuple, wall_offset: float) -> dict[str, Any]:
    """The logged fields of an entry, in log order (JSON values)."""
    start, end, sent, first_byte, connect = entry[0], entry[1], entry[2], entry[3], entry[4]
    return {
        "time": start + wall_offset,
        "request_id": entry[10],
        "client_ip": entry[12],
        "consumer": entry[13],
        "user_agent": entry[14].decode("latin-1"),
        "referer": _referer(entry[15].decode("latin-1")),
        "method": entry[16],
        "host": entry[17],
        "http_version": entry[18],
        "route": entry[19],
        "service": entry[20],
        "instance": entry[21],
        "cause": entry[22],
        "path": entry[5],
        "status": entry[6],
        "bytes_in": entry[7],
        "bytes_out": entry[8],
        "connect_ms": round(connect * 1000, 3) if connect else -1.0,
        "first_byte_ms": round((first_byte - sent) * 1000, 3) if first_byte and sent else -1.0,
        "total_ms": round((end - start) * 1000, 3) if end and start else -1.0,
        "retries": entry[9],
        "trace_id": entry[11],
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


def json_line(entry: EntryTuple, wall_offset: float, repeats: Repeats) -> str:
    """One JSON object and a newline: the fields of ``fields`` in that order, as
    ``json.dumps(separators=(",", ":"))`` writes them (strings through the same escaping), but
    assembled by hand, several times faster: one f-string, which builds the line in one go (a
    fifth cheaper than joining a list of its pieces), with the fields that repeat from line to
    line as two remembered pieces. The request id needs no escaping: it is either minted here
    (hex) or a client's that passed ``forward.valid_request_id`` (no quote, backslash or control
    character); the trace id is hex digits."""
    start: float = entry[0]
    end: float = entry[1]
    sent: float = entry[2]
    first_byte: float = entry[3]
    connect: float = entry[4]
    connect_whole, connect_fraction = _ms(connect) if connect else _NONE
    first_whole, first_fraction = _ms(first_byte - sent) if first_byte and sent else _NONE
    total_whole, total_fraction = _ms(end - start) if end and start else _NONE
    client = repeats.client(entry[12], entry[13], entry[14], entry[15])
    way = repeats.way(entry[16], entry[17], entry[18], entry[19], entry[20], entry[21], entry[22])
    return (
        f'{{"time":"{repeats.iso(start + wall_offset)}","request_id":"{entry[10]}",{client}{way}'
        f'"path":{_quote_json(entry[5])},"status":{_integer(entry[6])},'
        f'"bytes_in":{_integer(entry[7])},"bytes_out":{_integer(entry[8])},'
        f'"connect_ms":{connect_whole}{connect_fraction},'
        f'"first_byte_ms":{first_whole}{first_fraction},'
        f'"total_ms":{total_whole}{total_fraction},"retries":{_integer(entry[9])},'
        f'"trace_id":"{entry[11]}"}}\n'
    )


def common_line(entry: EntryTuple, wall_offset: float, repeats: Repeats) -> str:
    return _apache_line(fields(entry, wall_offset))


def combined_line(entry: EntryTuple, wall_offset: float, repeats: Repeats) -> str:
    values = fields(entry, wall_offset)
    return (
        _apache_line(values)[:-1]
        + f' "{_quote(values["referer"]) or "-"}" "{_quote(values["user_agent"]) or "-"}"\n'
    )


def _apache_line(values: dict[str, Any]) -> str:
    size = str(values["bytes_out"]) if values["bytes_out"] else "-"
    return (
        f"{values['client_ip'] or '-'} - {values['consumer'] or '-'} "
        f"[{_clf_time(values['time'])}] "
        f'"{values["method"]} {_quote(values["path"])} HTTP/{values["http_version"]}" '
        f"{values['status']} {size}\n"
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


Renderer = Callable[[EntryTuple, float, Repeats], str]
RENDERERS: Final[dict[str, Renderer]] = {
    "json": json_line,
    "common": common_line,
    "combined": combined_line,
}
