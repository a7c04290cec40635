"""Finished exchanges as OpenTelemetry spans, exported over OTLP/HTTP by background threads.

The hot path does no OpenTelemetry work: for a request whose ``TraceContext`` is ``recording``
(sampled, tracing enabled) it appends one ``Finished`` tuple to a list, and the sweeper hands that
list to the ``tracing`` thread (``flush``), as the access log does. That thread makes the spans with
the SDK's own ``Tracer``: one SERVER span for the gateway hop, one CLIENT span per upstream try,
with explicit start and end times, and with the exact ids the requests carried. The ids come
through the SDK's ``IdGenerator`` extension point: a ``_PresetIds`` generator hands out the ids
``trace_context`` already chose (only that thread starts spans, so it sets them just before each
``start_span``), and the remote parent goes in as an explicit ``Context``. So span limits, the
resource and the processor pipeline are the SDK's, untouched. Building ``ReadableSpan`` objects by
hand would work too, but the SDK documents that class as not for users to construct.

Ended spans go to a ``BatchSpanProcessor``, whose own thread exports them in batches (512, every
5 s or sooner when full; the ``OTEL_BSP_*`` variables tune it), with ``OTLPSpanExporter`` over
HTTP/protobuf: it needs ``requests`` and ``protobuf``, where the gRPC exporter needs ``grpcio``, a
much larger native package, for the same spans.

Both memory and CPU are bounded: past ``MAX_BACKLOG`` exchanges waiting for the tracing thread,
further ones are dropped and counted, and the processor drops spans past its queue size. A bound
in exchanges rather than batches matters under overload (every request traced, faster than the
thread makes spans): the thread then lags by at most a second or so of work, instead of going on
making spans, most of which the processor drops, for a minute after the load stopped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    TraceState,
    set_span_in_context,
)
from opentelemetry.util.types import AttributeValue

from portway.config.observability import TracingConfig
from portway.observability.trace_context import Finished, Propagator

log = logging.getLogger("portway.tracing")

# Exchanges handed to the tracing thread and not yet made into spans, at most: about 1.5 s of its
# work (some 170 µs per exchange, docs/performance.md).
MAX_BACKLOG = 8192
SCOPE = "portway"
TRACES_PATH = "/v1/traces"


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector URL: ``/v1/traces`` added when it has no path."""
    if urlsplit(endpoint).path in ("", "/"):
        return endpoint.rstrip("/") + TRACES_PATH
    return endpoint


def otlp_exporter(config: TracingConfig) -> SpanExporter:
    """The OTLP/HTTP protobuf exporter for ``config`` (its endpoint, else the OTEL_* variables)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = traces_url(config.otlp_endpoint) if config.otlp_endpoint is not None else None
    return OTLPSpanExporter(endpoint=endpoint)


class _PresetIds(IdGenerator):
    """Hands out the ids set just before a span starts (used by the tracing thread alone)."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id


class Tracing:
    """One worker's span export. Create it in the worker process (its threads do not survive a
    fork), ``add`` on the loop, ``flush`` from the sweeper, ``close`` when draining."""

    def __init__(
        self,
        config: TracingConfig,
        exporter: SpanExporter | None = None,
        processor: SpanProcessor | None = None,
    ) -> None:
        """``exporter`` defaults to OTLP/HTTP per ``config``; ``processor`` (tests) replaces the
        ``BatchSpanProcessor`` around it."""
        self.propagator = Propagator(config.sample_ratio, recording=True)
        self._ids = _PresetIds()
        self._provider = TracerProvider(
            sampler=ALWAYS_ON,  # the decision was made per request, by trace_context
            resource=Resource.create({"service.name": config.service_name}),
            id_generator=self._ids,
        )
        if processor is None:
            processor = BatchSpanProcessor(
                exporter if exporter is not None else otlp_exporter(config)
            )
        self._provider.add_span_processor(processor)
        self._tracer: Tracer = self._provider.get_tracer(SCOPE)
        self._batch: list[Finished] = []
        self._queue: queue.SimpleQueue[tuple[list[Finished], float] | threading.Event | None] = (
            queue.SimpleQueue()
        )
        # Exchanges handed over, and exchanges the thread is done with: each counter is written by
        # one thread only (no lost updates); what is between them waits.
        self._handed = 0
        self._done = 0
        self.dropped = 0  # exchanges whose spans were dropped because the thread fell behind
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="tracing", daemon=True)
        self._thread.start()

    # -- the event loop's side ---------------------------------------------------------------------

    def add(self, finished: Finished) -> None:
        """A recording exchange ended (``finished.trace.recording``; others are not added)."""
        self._batch.append(finished)

    def flush(self) -> None:
        """Hand the exchanges gathered since the last flush to the tracing thread (the sweeper)."""
        if self._batch:
            batch, self._batch = self._batch, []
            room = MAX_BACKLOG - (self._handed - self._done)
            if len(batch) > room:
                if not self.dropped:
                    log.error("span export cannot keep up: dropping spans")
                self.dropped += len(batch) - max(room, 0)
                if room <= 0:
                    return
                del batch[room:]
            self._handed += len(batch)
            self._queue.put((batch, time.time() - time.monotonic()))

    def force_flush(self, timeout: float = 10.0) -> bool:
        """Flush, wait until the thread made the spans and the processor exported them; blocking
        (tests, and shutdown paths off the loop)."""
        self.flush()
        done = threading.Event()
        self._queue.put(done)
        if not done.wait(timeout):
            return False
        return self._provider.force_flush(int(timeout * 1000))

    def close(self, timeout: float = 5.0) -> None:
        """Flush, stop the thread, then let the processor export what it holds and shut down."""
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout)
        self._provider.shutdown()

    # -- the tracing thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            batch, offset = item
            done = self._done
            try:
                for finished in batch:
                    self._spans(finished, offset)
                    self._done += 1  # the backlog shrinks as the batch goes, not at its end
                self._failing = False
            except Exception:  # a bug here must not stop the thread, nor flood the log
                if not self._failing:
                    log.exception("making spans failed; spans are lost until it works")
                self._failing = True
            finally:
                self._done = done + len(batch)

    def _spans(self, finished: Finished, offset: float) -> None:
        """The SERVER span of one exchange and a CLIENT span per try, with the propagated ids."""
        trace, request = finished.trace, finished.request
        ids, tracer = self._ids, self._tracer
        trace_id = ids.trace_id = int(trace.trace_id, 16)
        parent: Context = Context()  # empty: the trace starts at the gateway
        if trace.parent_id is not None:
            state = trace.tracestate
            remote = SpanContext(
                trace_id,
                int(trace.parent_id, 16),
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
                trace_state=TraceState.from_header([state.decode("ascii")]) if state else None,
            )
            parent = set_span_in_context(NonRecordingSpan(remote), parent)
        method = request.method
        attributes: dict[str, AttributeValue] = {
            "http.request.method": method,
            "url.path": request.path,
            "server.address": request.host,
            "client.address": request.client_ip,
            "portway.request_id": request.request_id,
        }
        if finished.route:
            attributes["http.route"] = finished.route
        if finished.service:
            attributes["portway.service"] = finished.service
        ids.span_id = int(trace.span_id, 16)
        server = tracer.start_span(
            f"{method} {finished.route}" if finished.route else method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            start_time=_ns(finished.start, offset),
        )
        inside = set_span_in_context(server, Context())
        tries = trace.tries or ()
        for number, attempt in enumerate(tries):
            host, _, port = attempt.address.rpartition(":")
            client_attributes: dict[str, AttributeValue] = {
                "http.request.method": method,
                "server.address": host.strip("[]") or attempt.address,
                "portway.retry": number,
            }
            if port.isdigit():
                client_attributes["server.port"] = int(port)
            if number:
                client_attributes["http.request.resend_count"] = number
            status, error, end = attempt.status, attempt.error, attempt.end
            if not end:  # the last try: it ended with the exchange, and its outcome is the answer
                end = finished.end
                if finished.cause:
                    error = finished.cause
                else:
                    status = finished.status
            if status:
                client_attributes["http.response.status_code"] = status
            if error:
                client_attributes["error.type"] = error
            elif status >= 500:
                client_attributes["error.type"] = str(status)
            ids.span_id = int(attempt.span_id, 16)
            client = tracer.start_span(
                method,
                context=inside,
                kind=SpanKind.CLIENT,
                attributes=client_attributes,
                start_time=_ns(attempt.start, offset),
            )
            if error or status >= 500:
                client.set_status(Status(StatusCode.ERROR, error or None))
            client.end(end_time=_ns(end, offset))
        status = finished.status
        server.set_attribute("http.response.status_code", status)
        if finished.cause:
            server.set_attribute("portway.error", finished.cause)
        if status >= 500:
            server.set_attribute("error.type", finished.cause or str(status))
            server.set_status(Status(StatusCode.ERROR))
        server.end(end_time=_ns(finished.end, offset))


def _ns(monotonic: float, offset: float) -> int:
    """A ``time.monotonic()`` instant as Unix nanoseconds (``offset``: wall minus monotonic)."""
    return int((monotonic + offset) * 1e9)
