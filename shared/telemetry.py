"""OpenTelemetry tracing: one trace per card, whose context travels inside events across Kafka
hops, in a stage's own table across its work queue, and in the `traceparent` header of every
HTTP call a stage makes (keymgmt's FastAPI continues it).

Spans go to a JSON-lines file on the local stack and, when the standard
`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` settings are present, to an
OTLP/HTTP collector (the exporter reads the standard settings itself: headers, timeout,
certificate)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
from opentelemetry import context, propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from shared.events.base import TraceContext

_configured = False
OTLP_SETTINGS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_card_tracer = trace.get_tracer("bureau.card")


class JsonLinesSpanExporter(SpanExporter):
    """Finished spans as JSON lines in a file: enough to follow a card across services locally."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._path.open("a", encoding="utf-8") as out:
            for span in spans:
                ctx = span.get_span_context()
                parent = span.parent
                out.write(
                    json.dumps(
                        {
                            "name": span.name,
                            "trace_id": format(ctx.trace_id, "032x") if ctx else None,
                            "span_id": format(ctx.span_id, "016x") if ctx else None,
                            "parent_id": format(parent.span_id, "016x") if parent else None,
                            "service": span.resource.attributes.get("service.name"),
                            "start": span.start_time,
                            "end": span.end_time,
                            "attributes": dict(span.attributes or {}),
                        },
                        default=str,
                    )
                    + "\n"
                )
        return SpanExportResult.SUCCESS


def otlp_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the standard OTLP settings name a collector for traces."""
    return any(environ.get(name) for name in OTLP_SETTINGS)


def configure_tracing(service: str, trace_file: str | None) -> None:
    global _configured
    if _configured:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if trace_file:
        provider.add_span_processor(BatchSpanProcessor(JsonLinesSpanExporter(Path(trace_file))))
    if otlp_configured():
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def current_trace_context() -> TraceContext | None:
    """The active span's context, to embed in an event about to be emitted."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if "traceparent" not in carrier:
        return None
    return TraceContext(
        traceparent=carrier["traceparent"], tracestate=carrier.get("tracestate", "")
    )


@contextmanager
def continue_trace(trace_ctx: TraceContext | None) -> Iterator[None]:
    """Make the event's trace the parent of whatever spans the handler starts."""
    if trace_ctx is None:
        yield
        return
    carrier = {"traceparent": trace_ctx.traceparent, "tracestate": trace_ctx.tracestate}
    token = context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        context.detach(token)


def trace_context_of(traceparent: str | None, tracestate: str = "") -> TraceContext | None:
    """A trace context kept in a stage's own table (a work queue row), back as an event's."""
    if not traceparent:
        return None
    return TraceContext(traceparent=traceparent, tracestate=tracestate)


def new_card_trace(card_id: str) -> TraceContext | None:
    """Open a card's own trace: a root span for the card, linked to the span that ordered it
    (the order's request), so every later hop of this one card shares one trace id."""
    ordering = trace.get_current_span().get_span_context()
    links = [trace.Link(ordering)] if ordering.is_valid else []
    with _card_tracer.start_as_current_span(
        "card", context=context.Context(), links=links, attributes={"card.id": card_id}
    ):
        return current_trace_context()


@contextmanager
def card_stage(stage: str, trace_ctx: TraceContext | None, card_id: str) -> Iterator[None]:
    """A stage's work on one card taken from its own queue: a span in the card's trace, so the
    events it emits and the HTTP calls it makes carry that trace."""
    with (
        continue_trace(trace_ctx),
        _card_tracer.start_as_current_span(stage, attributes={"card.id": card_id}),
    ):
        yield


async def inject_trace_headers(request: httpx.Request) -> None:
    """httpx request hook: the current trace travels in `traceparent` to the service called."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    request.headers.update(carrier)


def echo_span(
    tracer_: trace.Tracer, batch: trace.Span, traces: Sequence[TraceContext | None]
) -> None:
    """A span over a batch of events lives in the first event's trace; each other event gets a
    span of the same name and times in its own trace, linked to the batch's, so every card's
    trace shows the stage that handled it in a batch."""
    if not isinstance(batch, ReadableSpan) or not batch.get_span_context().is_valid:
        return
    link = trace.Link(batch.get_span_context())
    for trace_ctx in traces:
        if trace_ctx is None:
            continue
        carrier = {"traceparent": trace_ctx.traceparent, "tracestate": trace_ctx.tracestate}
        span = tracer_.start_span(
            batch.name,
            context=propagate.extract(carrier),
            links=[link],
            start_time=batch.start_time,
            attributes=dict(batch.attributes or {}),
        )
        span.end(end_time=batch.end_time)
