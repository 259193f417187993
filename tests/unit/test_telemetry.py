"""One trace per card: a card's trace is opened at intake, carried through events, through a
stage's work queue, through HTTP calls and through batch handling; and spans reach an OTLP/HTTP
collector through the standard settings (a receiver written from the OTLP specification)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.telemetry import (
    card_stage,
    current_trace_context,
    echo_span,
    inject_trace_headers,
    new_card_trace,
    otlp_configured,
    trace_context_of,
)
from tests.support.otlp import start_receiver


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider (set once per process), with an in-memory exporter."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(resource=Resource.create({"service.name": "unit"}))
        trace.set_tracer_provider(provider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield memory
    memory.shutdown()


def trace_id(traceparent: str) -> str:
    return traceparent.split("-")[1]


def test_otlp_is_on_only_when_the_standard_settings_name_a_collector() -> None:
    assert not otlp_configured({})
    assert not otlp_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": ""})
    assert otlp_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert otlp_configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/x"})


def test_each_card_of_an_order_gets_its_own_trace_linked_to_the_order(
    spans: InMemorySpanExporter,
) -> None:
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("POST /v1/orders") as order:
        first, second = new_card_trace("card-1"), new_card_trace("card-2")
    assert first is not None
    assert second is not None
    order_trace = format(order.get_span_context().trace_id, "032x")
    assert len({trace_id(first.traceparent), trace_id(second.traceparent), order_trace}) == 3
    roots = [s for s in spans.get_finished_spans() if s.name == "card"]
    card_1 = next(s for s in roots if s.attributes and s.attributes["card.id"] == "card-1")
    assert [link.context.trace_id for link in card_1.links] == [order.get_span_context().trace_id]
    assert card_1.parent is None


async def test_a_stage_continues_the_stored_trace_into_its_events_and_http_calls(
    spans: InMemorySpanExporter,
) -> None:
    card = new_card_trace("card-3")
    assert card is not None
    stored = card.traceparent  # as a work queue row keeps it
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("traceparent", ""))
        return httpx.Response(200)

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(answer), event_hooks={"request": [inject_trace_headers]}
    ) as client:
        with card_stage("encode", trace_context_of(stored), "card-3"):
            emitted = current_trace_context()
            await client.get("http://keymgmt.invalid/v1/x")
        await client.get("http://keymgmt.invalid/v1/y")  # outside any trace
    assert emitted is not None
    assert trace_id(emitted.traceparent) == trace_id(stored)
    assert trace_id(seen[0]) == trace_id(stored)
    assert seen[1] == ""
    assert trace_context_of(None) is None
    assert trace_context_of("") is None


def test_a_batch_span_reaches_every_card_of_the_batch(spans: InMemorySpanExporter) -> None:
    cards = [new_card_trace(f"batch-card-{n}") for n in range(3)]
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("consume card.ordered x3") as batch:
        pass
    echo_span(tracer, batch, [*cards[1:], None])
    names = {
        format(s.context.trace_id, "032x"): s
        for s in spans.get_finished_spans()
        if s.name == "consume card.ordered x3"
        and s.context.span_id != batch.get_span_context().span_id
    }
    for card in cards[1:]:
        assert card is not None
        echo = names[trace_id(card.traceparent)]
        assert [link.context.span_id for link in echo.links] == [batch.get_span_context().span_id]
        assert isinstance(batch, ReadableSpan)
        assert (echo.start_time, echo.end_time) == (batch.start_time, batch.end_time)


def test_spans_reach_an_otlp_collector_with_their_service_and_trace(
    spans: InMemorySpanExporter,
) -> None:
    receiver, server = start_receiver()
    try:
        card = new_card_trace("card-otlp")
        assert card is not None
        with card_stage("print", card, "card-otlp"):
            pass
        finished = [
            s
            for s in spans.get_finished_spans()
            if s.attributes and s.attributes.get("card.id") == "card-otlp"
        ]
        exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
        assert exporter.export(finished) is SpanExportResult.SUCCESS
        exporter.shutdown()  # type: ignore[no-untyped-call]
        received = receiver.traces()[trace_id(card.traceparent)]
        assert sorted(s.name for s in received) == ["card", "print"]
        assert {s.attributes["card.id"] for s in received} == {"card-otlp"}
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        assert {s.service for s in received} == {provider.resource.attributes["service.name"]}
        stage = next(s for s in received if s.name == "print")
        root = next(s for s in received if s.name == "card")
        assert stage.parent_id == root.span_id
    finally:
        server.shutdown()
