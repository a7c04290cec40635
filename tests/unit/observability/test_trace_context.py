"""W3C Trace Context: traceparent and tracestate parsing, ids, ratio sampling, upstream headers."""

from __future__ import annotations

import random

import pytest

from portway.observability.trace_context import (
    Propagator,
    TraceContext,
    parse_traceparent,
    parse_tracestate,
    ratio_bound,
    sampled_by_ratio,
)

TRACE = b"4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = b"00f067aa0ba902b7"
VALID = b"00-" + TRACE + b"-" + PARENT + b"-01"


# -- traceparent ----------------------------------------------------------------------------------


def test_valid_traceparent_from_the_spec() -> None:
    assert parse_traceparent(VALID) == (TRACE, PARENT, 1)
    assert parse_traceparent(b"00-" + TRACE + b"-" + PARENT + b"-00") == (TRACE, PARENT, 0)


def test_surrounding_whitespace_is_optional_whitespace() -> None:
    assert parse_traceparent(b" " + VALID + b"\t") == (TRACE, PARENT, 1)


def test_unknown_flag_bits_are_kept_for_the_caller_to_ignore() -> None:
    assert parse_traceparent(b"00-" + TRACE + b"-" + PARENT + b"-09") == (TRACE, PARENT, 9)


@pytest.mark.parametrize(
    "value",
    [
        b"00-" + b"0" * 32 + b"-" + PARENT + b"-01",  # all-zero trace id
        b"00-" + TRACE + b"-" + b"0" * 16 + b"-01",  # all-zero parent id
        b"00-" + TRACE[:-1] + b"-" + PARENT + b"-01",  # trace id one digit short
        b"00-" + TRACE + b"a-" + PARENT + b"-01",  # trace id one digit long
        b"00-" + TRACE + b"-" + PARENT[:-1] + b"-01",  # parent id short
        b"00-" + TRACE + b"-" + PARENT + b"-1",  # flags one digit
        b"00-" + TRACE + b"-" + PARENT + b"-001",  # flags three digits
        b"00-" + TRACE + b"-" + PARENT + b"-0g",  # flags not hex
        b"00-" + TRACE + b"-" + PARENT + b"-0A",  # flags upper case
        b"00-" + TRACE.upper() + b"-" + PARENT + b"-01",  # trace id upper case
        b"00-" + TRACE + b"-" + PARENT.upper() + b"-01",  # parent id upper case
        b"00-" + TRACE + b"-" + PARENT + b"-01-extra",  # version 00 has exactly four fields
        b"00_" + TRACE + b"-" + PARENT + b"-01",  # wrong separator
        b"00-" + TRACE + b"_" + PARENT + b"-01",
        b"ff-" + TRACE + b"-" + PARENT + b"-01",  # version ff is invalid
        b"0g-" + TRACE + b"-" + PARENT + b"-01",  # version not hex
        b"0A-" + TRACE + b"-" + PARENT + b"-01",  # version upper case
        b"",
        b"garbage",
        VALID + b"," + VALID,  # two traceparent lines joined: invalid
    ],
)
def test_malformed_traceparent_is_rejected(value: bytes) -> None:
    assert parse_traceparent(value) is None


def test_future_version_is_parsed_leniently() -> None:
    # A later version may add fields after a dash; the first 55 characters read as version 00.
    assert parse_traceparent(b"cc-" + TRACE + b"-" + PARENT + b"-01") == (TRACE, PARENT, 1)
    assert parse_traceparent(b"cc-" + TRACE + b"-" + PARENT + b"-01-what-the-future-holds") == (
        TRACE,
        PARENT,
        1,
    )
    # ... but no more lenient than that: the next character must be a dash, ids stay checked.
    assert parse_traceparent(b"cc-" + TRACE + b"-" + PARENT + b"-01.x") is None
    assert parse_traceparent(b"cc-" + TRACE + b"-" + PARENT + b"-0") is None
    assert parse_traceparent(b"cc-" + b"0" * 32 + b"-" + PARENT + b"-01") is None


# -- tracestate -----------------------------------------------------------------------------------


def test_valid_tracestate_is_kept_as_received() -> None:
    value = b"rojo=00f067aa0ba902b7, congo=t61rcWkgMzE,  ,tenant@vendor=x y"
    assert parse_tracestate(value) == value
    assert parse_tracestate(b"  a=1  ") == b"a=1"  # optional whitespace around the list
    assert parse_tracestate(b"a=x y") == b"a=x y"  # spaces inside a value are fine


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b" , ,",  # empty members only
        b"Rojo=1",  # keys are lower case
        b"1abc=1",  # a simple key starts with a letter
        b"a=1,a=2",  # a key twice
        b"a=",  # an empty value
        b"a=b=c",  # "=" in a value
        b"a=\x7f",
        b"noequals",
        b"t@" + b"s" * 15 + b"=1",  # system id longer than 14
        b"k" * 257 + b"=1",  # key longer than 256
        b"a=" + b"v" * 257,  # value longer than 256
        b",".join(b"k%d=v" % i for i in range(33)),  # more than 32 members
    ],
)
def test_invalid_tracestate_is_dropped(value: bytes) -> None:
    assert parse_tracestate(value) is None


def test_tracestate_limits_are_inclusive() -> None:
    thirty_two = b",".join(b"k%d=v" % i for i in range(32))
    assert parse_tracestate(thirty_two) == thirty_two
    assert parse_tracestate(b"a=" + b"v" * 256) == b"a=" + b"v" * 256
    long_key = b"k" * 256 + b"=1"
    assert parse_tracestate(long_key) == long_key


def test_long_tracestate_is_truncated_large_members_first_then_from_the_end() -> None:
    large = b"big=" + b"x" * 200  # over 128 characters: removed first
    small = [b"m%02d=%s" % (i, b"y" * 30) for i in range(20)]  # 34 characters each
    value = b",".join([small[0], large, *small[1:]])
    assert len(value) > 512
    kept = parse_tracestate(value)
    assert kept is not None and len(kept) <= 512
    members = kept.split(b",")
    assert b"big=" + b"x" * 200 not in members
    assert members == small[: len(members)]  # the front of the list survives, in order
    # n members of 34 characters take 35n - 1 with their commas: 14 fit in 512.
    assert len(members) == 14


# -- contexts -------------------------------------------------------------------------------------


def test_a_valid_traceparent_is_continued() -> None:
    trace = Propagator(sample_ratio=0.0, recording=True).start(VALID, b"rojo=1")
    assert trace.trace_id == TRACE
    assert trace.parent_id == PARENT
    assert trace.sampled and trace.recording  # the caller's decision wins over the ratio
    assert trace.tracestate == b"rojo=1"
    assert len(trace.span_id) == 16 and trace.span_id not in (PARENT, b"0" * 16)


def test_an_unsampled_caller_is_respected() -> None:
    trace = Propagator(sample_ratio=1.0, recording=True).start(VALID[:-2] + b"00", None)
    assert not trace.sampled and not trace.recording and trace.tries is None
    assert trace.upstream_lines() == b"traceparent: 00-%s-%s-00\r\n" % (TRACE, PARENT)


def test_an_invalid_traceparent_starts_a_new_trace_and_drops_tracestate() -> None:
    trace = Propagator().start(VALID.upper(), b"rojo=1")
    assert trace.parent_id is None
    assert trace.tracestate is None
    assert len(trace.trace_id) == 32 and trace.trace_id != TRACE.upper()
    assert parse_traceparent(trace.traceparent()) == (trace.trace_id, trace.span_id, 1)


def test_missing_traceparent_starts_a_trace_sampled_by_ratio() -> None:
    assert Propagator(sample_ratio=1.0).start(None, None).sampled
    assert not Propagator(sample_ratio=0.0).start(None, None).sampled
    with pytest.raises(ValueError, match="sample_ratio"):
        Propagator(sample_ratio=1.5)


def test_generated_ids_are_lower_hex_and_distinct() -> None:
    propagator = Propagator()
    traces = [propagator.start(None, None) for _ in range(200)]
    ids = {t.trace_id for t in traces}
    assert len(ids) == 200
    for trace in traces:
        parsed = parse_traceparent(trace.traceparent())
        assert parsed is not None and parsed[0] == trace.trace_id


def test_each_recorded_try_gets_its_own_span_id_in_the_same_trace() -> None:
    trace = Propagator(recording=True).start(VALID, b"rojo=1")
    trace.begin_try("10.0.0.1:80", 1.0)
    first = trace.upstream_lines()
    trace.end_try(1.5, error="reset")
    trace.begin_try("10.0.0.2:80", 2.0)
    second = trace.upstream_lines()
    assert trace.tries is not None
    a, b = trace.tries
    assert first == b"traceparent: 00-%s-%s-01\r\ntracestate: rojo=1\r\n" % (TRACE, a.span_id)
    assert second == b"traceparent: 00-%s-%s-01\r\ntracestate: rojo=1\r\n" % (TRACE, b.span_id)
    assert len({a.span_id, b.span_id, trace.span_id, PARENT}) == 4
    assert (a.address, a.start, a.end, a.error, a.status) == ("10.0.0.1:80", 1.0, 1.5, "reset", 0)
    assert (b.address, b.start, b.end) == ("10.0.0.2:80", 2.0, 0.0)  # open: ends with the exchange


def test_a_try_begun_over_an_open_one_closes_it() -> None:
    trace = Propagator(recording=True).start(None, None)
    trace.begin_try("a:1", 1.0)
    trace.begin_try("b:1", 2.0)
    assert trace.tries is not None and trace.tries[0].end == 2.0


def test_a_context_that_does_not_record_keeps_nothing_per_try() -> None:
    trace = Propagator(recording=False).start(VALID, None)
    trace.begin_try("10.0.0.1:80", 1.0)
    trace.end_try(2.0, status=503)
    assert trace.tries is None
    # The caller's span stays the parent upstream: no span of the gateway's would exist.
    assert trace.upstream_lines() == b"traceparent: 00-%s-%s-01\r\n" % (TRACE, PARENT)
    new = Propagator(recording=False).start(None, None)
    assert new.upstream_lines() == b"traceparent: 00-%s-%s-01\r\n" % (new.trace_id, new.span_id)


def test_context_is_slotted() -> None:
    trace = TraceContext(TRACE, None, True, None, False)
    with pytest.raises(AttributeError):
        trace.other = 1  # type: ignore[attr-defined]


# -- ratio sampling -------------------------------------------------------------------------------


def test_ratio_sampling_is_deterministic_on_the_trace_id() -> None:
    rng = random.Random(7)
    bound = ratio_bound(0.3)
    ids = [rng.getrandbits(128) for _ in range(1000)]
    first = [sampled_by_ratio(i, bound) for i in ids]
    assert first == [sampled_by_ratio(i, bound) for i in ids]
    # Only the low 64 bits count, as in OpenTelemetry's TraceIdRatioBased.
    assert [sampled_by_ratio(i ^ (rng.getrandbits(64) << 64), bound) for i in ids] == first
    assert sampled_by_ratio(1, ratio_bound(0.0)) is False
    assert sampled_by_ratio((1 << 64) - 1, ratio_bound(1.0)) is True


@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.25, 0.5, 0.9])
def test_ratio_sampling_rate_over_20000_ids(ratio: float) -> None:
    propagator = Propagator(sample_ratio=ratio)
    sampled = sum(propagator.start(None, None).sampled for _ in range(20_000))
    assert abs(sampled / 20_000 - ratio) <= 0.03
