"""Finished exchanges become OpenTelemetry spans with the propagated ids, exported over OTLP/HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode

from portway.config.observability import TracingConfig
from portway.messages import Request
from portway.observability.trace_context import (
    Propagator,
    TraceContext,
    ratio_bound,
    sampled_by_ratio,
)
from portway.observability.tracing import MAX_BACKLOG, Finished, Tracing, traces_url
from tests.support.otlp import OtlpReceiver

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{CALLER}-01".encode()


def _request() -> Request:
    return Request("GET", "api.example.com", "/users/7", "q=1", [], "192.0.2.7", "rid-1")


def _retried_exchange(propagator: Propagator) -> Finished:
    """A request retried once: the first try was reset, the second answered 200."""
    trace = propagator.start(TRACEPARENT, b"rojo=1")
    trace.begin_try("10.1.0.11:8000", 100.010)
    trace.end_try(100.020, error="reset")
    trace.begin_try("[::1]:8001", 100.030)
    return Finished(trace, _request(), 100.0, 100.050, 200, "users", "users-svc", "")


@pytest.fixture
def memory() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    tracing = Tracing(TracingConfig(enabled=True), exporter=exporter)
    yield tracing, exporter
    tracing.close()


def _by_kind(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind == kind]


def test_server_and_client_spans_carry_the_propagated_ids(
    memory: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = memory
    finished = _retried_exchange(tracing.propagator)
    tracing.add(finished)
    assert tracing.force_flush()
    spans = exporter.get_finished_spans()
    assert len(spans) == 3
    (server,) = _by_kind(spans, SpanKind.SERVER)
    first, second = sorted(_by_kind(spans, SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    trace = finished.trace
    assert trace.tries is not None

    # The gateway hop: a child of the caller's span, with the id the request was given.
    assert server.name == "GET users"
    assert server.context is not None and server.parent is not None
    assert f"{server.context.trace_id:032x}" == TRACE
    assert f"{server.context.span_id:016x}" == trace.span_id.decode()
    assert f"{server.parent.span_id:016x}" == CALLER and server.parent.is_remote
    assert server.context.trace_state.to_header() == "rojo=1"
    assert dict(server.attributes or {}) == {
        "http.request.method": "GET",
        "url.path": "/users/7",
        "server.address": "api.example.com",
        "client.address": "192.0.2.7",
        "portway.request_id": "rid-1",
        "http.route": "users",
        "portway.service": "users-svc",
        "http.response.status_code": 200,
    }
    assert server.status.status_code == StatusCode.UNSET

    # Each try: a child of the gateway span, with the span id its traceparent named upstream.
    for span, attempt in zip((first, second), trace.tries, strict=True):
        assert span.name == "GET"
        assert span.context is not None and span.parent is not None
        assert span.context.trace_id == server.context.trace_id
        assert f"{span.context.span_id:016x}" == attempt.span_id.decode()
        assert span.parent.span_id == server.context.span_id
    assert dict(first.attributes or {}) == {
        "http.request.method": "GET",
        "server.address": "10.1.0.11",
        "server.port": 8000,
        "portway.retry": 0,
        "error.type": "reset",
    }
    assert first.status.status_code == StatusCode.ERROR
    assert dict(second.attributes or {}) == {
        "http.request.method": "GET",
        "server.address": "::1",
        "server.port": 8001,
        "portway.retry": 1,
        "http.request.resend_count": 1,
        "http.response.status_code": 200,
    }
    assert second.status.status_code == StatusCode.UNSET

    # Times: the monotonic instants, shifted by one offset, so durations are kept (ns).
    assert server.start_time is not None and server.end_time is not None
    assert abs(server.end_time - server.start_time - 50_000_000) < 1_000
    assert first.start_time is not None and first.end_time is not None
    assert abs(first.start_time - server.start_time - 10_000_000) < 1_000
    assert abs(first.end_time - first.start_time - 10_000_000) < 1_000
    assert second.end_time == server.end_time  # the open last try ends with the exchange
    assert server.resource.attributes["service.name"] == "portway"


def test_a_new_trace_is_a_root_and_a_local_failure_marks_both_spans(
    memory: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = memory
    trace = tracing.propagator.start(None, None)
    trace.begin_try("10.1.0.11:8000", 5.0)
    tracing.add(Finished(trace, _request(), 4.0, 6.0, 502, "users", "users", "upstream_reset"))
    assert tracing.force_flush()
    spans = exporter.get_finished_spans()
    (server,) = _by_kind(spans, SpanKind.SERVER)
    (client,) = _by_kind(spans, SpanKind.CLIENT)
    assert server.parent is None
    assert server.context is not None
    assert f"{server.context.trace_id:032x}" == trace.trace_id.decode()
    assert server.status.status_code == StatusCode.ERROR
    assert server.attributes is not None
    assert server.attributes["error.type"] == "upstream_reset"
    assert server.attributes["http.response.status_code"] == 502
    assert client.attributes is not None
    assert client.attributes["error.type"] == "upstream_reset"
    assert "http.response.status_code" not in client.attributes  # the instance sent no status
    assert client.status.status_code == StatusCode.ERROR


def test_no_route_gives_a_lone_server_span(memory: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = memory
    trace = tracing.propagator.start(None, None)
    tracing.add(Finished(trace, _request(), 1.0, 1.001, 404, "", "", "no_route"))
    assert tracing.force_flush()
    (span,) = exporter.get_finished_spans()
    assert span.name == "GET" and span.kind == SpanKind.SERVER
    assert span.attributes is not None
    assert "http.route" not in span.attributes and "portway.service" not in span.attributes
    assert span.attributes["portway.error"] == "no_route"
    assert span.status.status_code == StatusCode.UNSET  # a 404 is the client's doing


def test_spans_wait_for_the_sweeper_flush(memory: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = memory
    tracing.add(_retried_exchange(tracing.propagator))
    assert exporter.get_finished_spans() == ()  # nothing leaves the loop before flush
    tracing.flush()
    assert tracing.force_flush()
    assert len(exporter.get_finished_spans()) == 3


def test_ratio_decision_matches_opentelemetry_trace_id_ratio_based() -> None:
    propagator = Propagator(sample_ratio=1.0)
    for ratio in (0.0, 0.1, 0.5, 0.77, 1.0):
        sampler = TraceIdRatioBased(ratio)
        assert ratio_bound(ratio) == sampler.bound
        for _ in range(300):
            trace_id = int(propagator.start(None, None).trace_id, 16)
            theirs = (
                sampler.should_sample(None, trace_id, "x").decision == Decision.RECORD_AND_SAMPLE
            )
            assert sampled_by_ratio(trace_id, ratio_bound(ratio)) == theirs


def test_traces_url() -> None:
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_url("https://c.example/otlp/v1/traces") == "https://c.example/otlp/v1/traces"


def test_tracing_config_defaults_and_checks() -> None:
    config = TracingConfig()
    assert (config.enabled, config.otlp_endpoint, config.sample_ratio, config.service_name) == (
        False,
        None,
        1.0,
        "portway",
    )
    with pytest.raises(ValueError, match="otlp_endpoint"):
        TracingConfig(otlp_endpoint="collector:4318")
    with pytest.raises(ValueError, match="sample_ratio"):
        TracingConfig(sample_ratio=2)


# -- a real OTLP/HTTP receiver on loopback ----------------------------------------------------------


def test_spans_reach_an_otlp_http_receiver() -> None:
    with OtlpReceiver() as receiver:
        config = TracingConfig(enabled=True, otlp_endpoint=receiver.endpoint, service_name="edge")
        tracing = Tracing(config)
        finished = _retried_exchange(tracing.propagator)
        tracing.add(finished)
        assert tracing.force_flush(10.0)
        tracing.close()
        assert receiver.wait_for_spans(3, timeout=5.0)
    export = receiver.exports[0]
    assert (export.path, export.content_type) == ("/v1/traces", "application/x-protobuf")
    message = export.message
    (resource_spans,) = message.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "edge"
    spans = [s for scope in resource_spans.scope_spans for s in scope.spans]
    assert {scope.scope.name for scope in resource_spans.scope_spans} == {"portway"}
    server_span = next(s for s in spans if s.kind == ProtoSpan.SPAN_KIND_SERVER)
    clients = sorted(
        (s for s in spans if s.kind == ProtoSpan.SPAN_KIND_CLIENT),
        key=lambda s: s.start_time_unix_nano,
    )
    trace: TraceContext = finished.trace
    assert trace.tries is not None
    assert server_span.trace_id.hex() == TRACE
    assert server_span.span_id.hex() == trace.span_id.decode()
    assert server_span.parent_span_id.hex() == CALLER
    assert server_span.trace_state == "rojo=1"
    assert server_span.name == "GET users"
    attributes = {a.key: a.value for a in server_span.attributes}
    assert attributes["http.response.status_code"].int_value == 200
    assert attributes["http.route"].string_value == "users"
    assert [c.span_id.hex() for c in clients] == [t.span_id.decode() for t in trace.tries]
    assert all(c.parent_span_id == server_span.span_id for c in clients)
    assert all(c.trace_id.hex() == TRACE for c in clients)
    retries = [{a.key: a.value for a in c.attributes}["portway.retry"].int_value for c in clients]
    assert retries == [0, 1]


class _HeldExporter(InMemorySpanExporter):
    """Exports only once released: the tracing thread, which exports through a simple processor,
    is held meanwhile, as behind a collector that stopped answering."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(10)
        return super().export(spans)


def test_a_thread_that_falls_behind_drops_what_is_past_the_backlog() -> None:
    """Past MAX_BACKLOG exchanges waiting, further ones are dropped (and counted) at the hand-over,
    not made into spans minutes later; a batch that only partly fits keeps what fits."""
    exporter = _HeldExporter()
    tracing = Tracing(
        TracingConfig(enabled=True), exporter=exporter, processor=SimpleSpanProcessor(exporter)
    )
    try:
        propagator = tracing.propagator
        first = propagator.start(None, None)
        tracing.add(Finished(first, _request(), 1.0, 2.0, 200, "r", "", ""))
        tracing.flush()  # the thread takes it and blocks exporting its span
        for _ in range(MAX_BACKLOG + 50):
            trace = propagator.start(None, None)
            tracing.add(Finished(trace, _request(), 1.0, 2.0, 200, "r", "", ""))
        tracing.flush()
        assert tracing.dropped == 51  # 1 + MAX_BACKLOG + 50 handed, MAX_BACKLOG fit
        tracing.add(Finished(propagator.start(None, None), _request(), 1.0, 2.0, 200, "r", "", ""))
        tracing.flush()
        assert tracing.dropped == 52  # still full: the whole batch goes
        exporter.release.set()
        assert tracing.force_flush()
    finally:
        exporter.release.set()
        tracing.close()
    spans = exporter.get_finished_spans()
    assert len(spans) == MAX_BACKLOG  # the first exchange and MAX_BACKLOG - 1 of the rest
    assert spans[0].context.trace_id == int(first.trace_id, 16)
