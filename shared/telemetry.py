"""OpenTelemetry tracing whose context travels inside events across Kafka hops."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from shared.events.base import TraceContext

_configured = False


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


def configure_tracing(service: str, trace_file: str | None) -> None:
    global _configured
    if _configured:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if trace_file:
        provider.add_span_processor(BatchSpanProcessor(JsonLinesSpanExporter(Path(trace_file))))
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
