"""W3C trace context through the gateway, and spans exported over OTLP/HTTP to a real receiver."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from tests.e2e.gateway import GatewayThread
from tests.support.backends import Backend
from tests.support.client import request
from tests.support.flaky import FlakyBackend
from tests.support.otlp import OtlpReceiver

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$")
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def config(address: str, **tracing: Any) -> dict[str, Any]:
    return {
        "server": {"tracing": tracing, "access_log": {"enabled": False}},
        "services": {"web": {"instances": [address]}},
        "routes": [{"name": "site", "path": "/", "service": "web"}],
    }


@pytest.fixture(autouse=True)
def prompt_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's batch processor exports every 5 s by default; 100 ms keeps these tests short."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")


def test_a_trace_is_started_when_absent_and_continued_when_present() -> None:
    """W3C Trace Context §3.2: a valid traceparent is continued (same trace id); an invalid or
    missing one starts a new trace; tracestate goes along unchanged."""
    with Backend() as backend, GatewayThread(config(backend.address)) as g:
        new = request(g.port, "GET", "/a").json()["headers"]
        continued = request(
            g.port,
            "GET",
            "/b",
            headers={
                "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
                "tracestate": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
            },
        ).json()["headers"]
        invalid = request(
            g.port, "GET", "/c", headers={"traceparent": f"00-{'0' * 32}-{CALLER_SPAN}-01"}
        ).json()["headers"]
    started = TRACEPARENT.match(new["traceparent"])
    assert started and started.group(1) != "0" * 32
    assert "tracestate" not in new
    kept = TRACEPARENT.match(continued["traceparent"])
    assert kept and kept.group(1) == CALLER_TRACE
    assert continued["traceparent"].endswith("-01")  # the caller's sampling decision holds
    assert continued["tracestate"] == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    fresh = TRACEPARENT.match(invalid["traceparent"])
    assert fresh and fresh.group(1) != "0" * 32  # an all-zero trace id is invalid: restarted


def test_spans_for_the_gateway_hop_and_each_try_reach_an_otlp_receiver() -> None:
    with OtlpReceiver() as receiver, Backend("ok") as ok:
        cfg = config(ok.address, enabled=True, otlp_endpoint=receiver.endpoint, service_name="edge")
        with GatewayThread(cfg) as g:
            response = request(
                g.port,
                "GET",
                "/users/1",
                headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
            )
            upstream_parent = TRACEPARENT.match(response.json()["headers"]["traceparent"])
            assert upstream_parent is not None
            spans = receiver.wait_for_spans(2)
    server = [s for s in spans if s.kind == ProtoSpan.SPAN_KIND_SERVER]
    client = [s for s in spans if s.kind == ProtoSpan.SPAN_KIND_CLIENT]
    assert len(server) == 1 and len(client) == 1
    assert server[0].trace_id.hex() == CALLER_TRACE
    assert server[0].parent_span_id.hex() == CALLER_SPAN  # continues the caller's trace
    assert client[0].parent_span_id == server[0].span_id  # each try is a child of the hop
    assert client[0].span_id.hex() == upstream_parent.group(2)  # what the backend was told
    attributes = {a.key: a.value for a in server[0].attributes}
    assert attributes["http.response.status_code"].int_value == 200
    assert attributes["http.route"].string_value == "site"


def test_a_retried_request_has_a_client_span_per_try_under_one_server_span() -> None:
    """The first instance answers 503 (retried by default); each try is a CLIENT span, children
    of the gateway's SERVER span, and each instance was told its own try's span id."""
    with OtlpReceiver() as receiver, FlakyBackend("failing") as failing, Backend("ok") as ok:
        failing.set(status=503)
        cfg = config(ok.address, enabled=True, otlp_endpoint=receiver.endpoint)
        cfg["services"]["web"]["instances"] = [failing.address, ok.address]
        with GatewayThread(cfg) as g:
            told: list[str] = []
            for trace in (CALLER_TRACE, CALLER_TRACE[::-1]):
                answer = request(
                    g.port, "GET", "/r", headers={"traceparent": f"00-{trace}-{CALLER_SPAN}-01"}
                )
                assert answer.status == 200
                told.append(answer.json()["headers"]["traceparent"])
            tries = 2 + failing.received  # one try each, and one more per 503
            assert failing.received >= 1
            spans = receiver.wait_for_spans(2 + tries)
    assert len(spans) == 2 + tries
    servers = {s.trace_id.hex(): s for s in spans if s.kind == ProtoSpan.SPAN_KIND_SERVER}
    assert set(servers) == {CALLER_TRACE, CALLER_TRACE[::-1]}
    for trace, upstream in zip((CALLER_TRACE, CALLER_TRACE[::-1]), told, strict=True):
        server = servers[trace]
        clients = sorted(
            (
                s
                for s in spans
                if s.kind == ProtoSpan.SPAN_KIND_CLIENT and s.trace_id == server.trace_id
            ),
            key=lambda s: s.start_time_unix_nano,
        )
        assert all(c.parent_span_id == server.span_id for c in clients)
        attributes = [{a.key: a.value for a in c.attributes} for c in clients]
        # The last try answered, and its span id is the one the answering instance was sent.
        last = attributes[-1]
        assert last["http.response.status_code"].int_value == 200
        assert last["server.port"].int_value == ok.port
        match = TRACEPARENT.match(upstream)
        assert match and clients[-1].span_id.hex() == match.group(2)
        for number, earlier in enumerate(attributes[:-1]):  # tries the failing instance answered
            assert earlier["http.response.status_code"].int_value == 503
            assert earlier["server.port"].int_value == failing.port
            assert earlier["error.type"].string_value == "503"
            assert earlier["portway.retry"].int_value == number
        if len(clients) > 1:
            assert last["http.request.resend_count"].int_value == len(clients) - 1


def test_sample_ratio_zero_records_only_what_a_sampled_caller_asks_for() -> None:
    """New traces are not sampled at ratio 0: the instance is told so (flags 00) and no span is
    exported; a caller's sampled decision still wins (W3C: the parent's flag is respected)."""
    with OtlpReceiver() as receiver, Backend("ok") as ok:
        cfg = config(ok.address, enabled=True, otlp_endpoint=receiver.endpoint, sample_ratio=0.0)
        with GatewayThread(cfg) as g:
            unsampled = [
                request(g.port, "GET", f"/n/{i}").json()["headers"]["traceparent"]
                for i in range(20)
            ]
            sampled = request(
                g.port, "GET", "/s", headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
            ).json()["headers"]["traceparent"]
            spans = receiver.wait_for_spans(2)
            time.sleep(0.5)  # a sweep or two more: nothing else may follow
            spans = receiver.spans()
    assert all(re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", t) for t in unsampled), unsampled
    assert len({t[3:35] for t in unsampled}) == 20  # a new trace each
    assert sampled.startswith(f"00-{CALLER_TRACE}-") and sampled.endswith("-01")
    assert {s.trace_id.hex() for s in spans} == {CALLER_TRACE}
    assert len(spans) == 2  # the gateway hop and its one try
