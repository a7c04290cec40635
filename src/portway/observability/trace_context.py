"""W3C Trace Context (https://www.w3.org/TR/trace-context/): continue a trace or start one.

Plain byte work, no OpenTelemetry: every request gets a ``TraceContext`` whether or not spans are
exported, because propagation is always on. A valid incoming ``traceparent`` is continued (same
trace id, its sampled flag respected); a missing or malformed one starts a new trace whose sampled
flag comes from the ratio, decided on the trace id exactly as OpenTelemetry's ``TraceIdRatioBased``
does (so every process that samples by ratio agrees on a trace). ``tracestate`` is kept as received
when it is valid, and only when the ``traceparent`` it came with was.

When a context is ``recording`` (sampled, and spans are exported) each upstream try is a span of
its own: ``begin_try`` draws a new span id and keeps a ``Try`` record for ``tracing``, and
``upstream_lines`` is the ``traceparent`` (and ``tracestate``) to send with it, same trace id. A
context that does not record keeps nothing per try and names the caller's span upstream.
"""

from __future__ import annotations

import binascii
import os
import random
import re
from typing import Final, NamedTuple

# Imported at run time, not only for type checking: compiled by mypyc, the NamedTuple ``Finished``
# below names it when the module is executed, and a module that imported this one first crashed.
from portway.messages import Request

VERSION = b"00"  # the version this gateway sends, whatever version it received
TRACEPARENT_LENGTH = 55  # version 00: 2 + 1 + 32 + 1 + 16 + 1 + 2
TRACESTATE_MAX_MEMBERS = 32
TRACESTATE_PROPAGATED = 512  # characters a vendor should propagate at least (spec §3.3.1.5)
TRACESTATE_LARGE_MEMBER = 128  # members above this are removed first when truncating
SAMPLED = 0x01

_HEX_DIGITS: Final = (
    b"0123456789abcdef"  # lower case only: upper-case hex makes a traceparent invalid
)
_ZERO_TRACE: Final = b"0" * 32
_ZERO_SPAN: Final = b"0" * 16
_ID_MASK: Final = (1 << 64) - 1  # TraceIdRatioBased compares the low 64 bits of the trace id
_getrandbits: Final = random.getrandbits  # reseeded in forked children by the random module itself

_KEY = rb"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
_VALUE = rb"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER = re.compile(rb"(" + _KEY + rb")=" + _VALUE)


def _is_hex(value: bytes) -> bool:
    return not value.translate(None, _HEX_DIGITS)


def parse_traceparent(value: bytes) -> tuple[bytes, bytes, int] | None:
    """``(trace_id, parent_id, flags)`` of a valid ``traceparent``, else None (restart the trace).

    Version 00 must be exactly 55 characters. A higher version (not ``ff``) is parsed leniently as
    the spec asks: its first 55 characters as version 00, and anything after them must start with
    ``-`` (fields a later version added). Only the sampled bit of the flags matters here.
    """
    value = value.strip(b" \t")
    if len(value) < TRACEPARENT_LENGTH or value[2:3] != b"-":
        return None
    version = value[:2]
    if version == VERSION:
        valid_length = len(value) == TRACEPARENT_LENGTH
    else:  # a later version: more fields may follow, after a dash
        valid_length = len(value) == TRACEPARENT_LENGTH or value[55:56] == b"-"
        if version == b"ff" or not _is_hex(version):
            return None
    if not valid_length:
        return None
    if value[35:36] != b"-" or value[52:53] != b"-":
        return None
    trace_id, parent_id, flags = value[3:35], value[36:52], value[53:55]
    if not (_is_hex(trace_id) and _is_hex(parent_id) and _is_hex(flags)):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, int(flags, 16)


def parse_tracestate(value: bytes) -> bytes | None:
    """``value`` as received when it is a valid ``tracestate`` of at most 512 characters; a longer
    valid one truncated as spec §3.3.1.5 says (members over 128 characters first, then from the
    end); None when invalid (a bad member, more than 32 members, a key twice) or empty."""
    value = value.strip(b" \t")
    if not value:
        return None
    members: list[bytes] = []
    keys: set[bytes] = set()
    for raw in value.split(b","):
        member = raw.strip(b" \t")
        if not member:
            continue  # empty list members are allowed and ignored
        match = _MEMBER.fullmatch(member)
        if match is None or match.group(1) in keys:
            return None
        keys.add(match.group(1))
        members.append(member)
    if not members or len(members) > TRACESTATE_MAX_MEMBERS:
        return None
    if len(value) <= TRACESTATE_PROPAGATED:
        return value
    kept = [m for m in members if len(m) <= TRACESTATE_LARGE_MEMBER]
    while kept and len(b",".join(kept)) > TRACESTATE_PROPAGATED:
        kept.pop()
    return b",".join(kept) or None


class RandomHex:
    """Random lower-case hex digits, drawn in batches: one ``os.urandom`` and ``hexlify`` per few
    dozen requests instead of an integer draw and a format per id. The kernel's generator, not
    ``random``'s: its ``randbytes`` is Python code building a 16,384-bit integer, which cost a
    request about 1,800 instructions of the 2,000 its ids took (callgrind); ``getrandom`` costs one
    system call per batch. The batch is dropped in a forked child so that no two processes hand
    out the same ids."""

    __slots__ = ("_digits", "_position")

    BATCH = 4096  # hex digits per draw

    def __init__(self) -> None:
        self._digits = b""
        self._position = 0

    def take(self, count: int) -> bytes:
        """``count`` (at most ``BATCH``) random hex digits."""
        position = self._position
        end = position + count
        if end > len(self._digits):
            self._digits = binascii.hexlify(os.urandom(self.BATCH // 2))
            position = 0
            end = count
        self._position = end
        return self._digits[position:end]

    def forget(self) -> None:
        self._digits = b""
        self._position = 0


random_hex: Final = RandomHex()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=random_hex.forget)


def new_trace_id() -> int:
    """A random 128-bit trace id, never all zero."""
    return _getrandbits(128) or 1


def new_span_id() -> bytes:
    """A random 64-bit span id as 16 lower-case hex digits, never all zero."""
    span_id = random_hex.take(16)
    while span_id == _ZERO_SPAN:  # 2**-64 odds
        span_id = random_hex.take(16)
    return span_id


def ratio_bound(ratio: float) -> int:
    """The bound of OpenTelemetry's ``TraceIdRatioBased(ratio)``."""
    return round(ratio * (_ID_MASK + 1))


def sampled_by_ratio(trace_id: int, bound: int) -> bool:
    """Deterministic on the trace id: its low 64 bits below the bound (``ratio_bound``)."""
    return trace_id & _ID_MASK < bound


class Try:
    """One upstream try, for its CLIENT span: times are ``time.monotonic()`` seconds."""

    __slots__ = ("address", "end", "error", "span_id", "start", "status")

    def __init__(self, span_id: bytes, address: str, start: float) -> None:
        self.span_id = span_id
        self.address = address  # the instance, host:port
        self.start = start
        self.end = 0.0  # 0: still open (closed with the exchange's outcome)
        self.status = 0  # response status; 0: none
        self.error = ""  # why the try failed without a status: connect, reset, timeout


class TraceContext:
    """One request's place in a trace. Held by its exchange from head to end."""

    __slots__ = (
        "_flags",
        "_span_id",
        "parent_id",
        "recording",
        "sampled",
        "trace_id",
        "tracestate",
        "tries",
        "try_id",
    )

    def __init__(
        self,
        trace_id: bytes,
        parent_id: bytes | None,
        sampled: bool,
        tracestate: bytes | None,
        recording: bool,
        span_id: bytes | None = None,
    ) -> None:
        self.trace_id = trace_id  # 32 lower-case hex digits
        self.parent_id = parent_id  # the caller's span id; None: the trace starts here
        # The gateway's own (SERVER) span id, drawn when first asked for (``span_id``): a
        # continued trace that records nothing never needs one.
        self._span_id = span_id
        self.sampled = sampled
        self._flags = b"01" if sampled else b"00"
        self.tracestate = tracestate  # as received, valid, or None
        self.recording = recording  # sampled and exported: keep the tries for spans
        self.tries: list[Try] | None = [] if recording else None
        # The parent named upstream: the current try's span when recording. Otherwise no span of
        # ours will exist, so the caller's span id goes on unchanged (the trace tree stays whole,
        # as OpenTelemetry's API does without an SDK); a new trace gets a fresh id.
        self.try_id = parent_id if parent_id is not None else self.span_id

    @property
    def span_id(self) -> bytes:
        span_id = self._span_id
        if span_id is None:
            span_id = self._span_id = new_span_id()
        return span_id

    def begin_try(self, address: str, now: float) -> None:
        """A try starts (an instance was picked): when recording, it gets a span id of its own."""
        tries = self.tries
        if tries is None:
            return
        if tries and not tries[-1].end:
            tries[-1].end = now  # the caller did not end the previous try: it ends here
        span_id = new_span_id()
        tries.append(Try(span_id, address, now))
        self.try_id = span_id

    def end_try(self, now: float, status: int = 0, error: str = "") -> None:
        """The current try is over without being the final answer (retried, or failed)."""
        if self.tries:
            current = self.tries[-1]
            if not current.end:
                current.end, current.status, current.error = now, status, error

    @property
    def flags(self) -> bytes:
        return self._flags

    def traceparent(self, span_id: bytes | None = None) -> bytes:
        """The ``traceparent`` value naming ``span_id`` (default: the gateway's span) as parent."""
        return b"%s-%s-%s-%s" % (VERSION, self.trace_id, span_id or self.span_id, self._flags)

    def upstream_lines(self) -> bytes:
        """Header lines for the current try, each ending in CRLF: ``traceparent`` naming the try's
        span (see ``try_id``) and the ``tracestate`` received, if any."""
        if self.tracestate is None:
            return b"traceparent: 00-%s-%s-%s\r\n" % (self.trace_id, self.try_id, self._flags)
        return b"traceparent: 00-%s-%s-%s\r\ntracestate: %s\r\n" % (
            self.trace_id,
            self.try_id,
            self._flags,
            self.tracestate,
        )


class Propagator:
    """Per worker: turns a request's trace headers into its ``TraceContext``.

    ``sample_ratio`` decides new traces; ``recording`` is whether sampled requests become spans
    (tracing enabled with an exporter). Continued traces keep their caller's sampled flag.
    """

    __slots__ = ("bound", "recording", "sample_all")

    def __init__(self, sample_ratio: float = 1.0, recording: bool = False) -> None:
        if not 0.0 <= sample_ratio <= 1.0:
            raise ValueError(f"sample_ratio must be from 0 to 1, got {sample_ratio}")
        self.bound = ratio_bound(sample_ratio)
        self.sample_all = self.bound > _ID_MASK  # every trace id is below it
        self.recording = recording

    def start(self, traceparent: bytes | None, tracestate: bytes | None) -> TraceContext:
        """Continue the caller's trace when ``traceparent`` is valid, else start a new one.

        Several header lines of one name are to be joined with ``,`` first: two ``traceparent``
        lines are then invalid (a new trace), two ``tracestate`` lines one list.
        """
        if traceparent is not None:
            parsed = parse_traceparent(traceparent)
            if parsed is not None:
                trace_id, parent_id, flags = parsed
                sampled = bool(flags & SAMPLED)
                state = parse_tracestate(tracestate) if tracestate is not None else None
                return TraceContext(trace_id, parent_id, sampled, state, self.recording and sampled)
        # A new trace: 48 random hex digits are its id (32) and the gateway's span id (16).
        ids = random_hex.take(48)
        trace_id = ids[:32]
        span_id = ids[32:]
        if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:  # invalid all-zero ids: 2**-64 odds
            trace_id = b"%032x" % new_trace_id()
            span_id = new_span_id()
        sampled = self.sample_all or int(ids[16:32], 16) < self.bound
        return TraceContext(trace_id, None, sampled, None, self.recording and sampled, span_id)


class Finished(NamedTuple):
    """What the hot path hands over for a recording exchange: values it already has."""

    trace: TraceContext
    request: Request  # method, host, path, request id, client address
    start: float  # monotonic time the exchange began
    end: float  # monotonic time it ended
    status: int  # the status the client got (499: it went away first)
    route: str  # route name; "" when no route matched
    service: str  # service name; "" when none
    cause: str  # portway-error of a local answer, "" otherwise
