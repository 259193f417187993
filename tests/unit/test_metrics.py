"""shared/metrics.py: the bureau's metrics in the Prometheus text format, the helpers services
call, what counts as a card reaching a stage, and /metrics.

The metrics are the process' own (defined once, as in production), so each test labels its
samples with values no other test uses."""

from __future__ import annotations

import functools
import re
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import Counter

from shared import events, metrics
from shared.outbox import card_stage
from shared.service import ServiceRuntime, create_app
from shared.settings import BureauSettings

# One sample line of the text exposition format 0.0.4: name, optional labels, a value.
SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
    r"(-?[0-9.e+-]+|\+Inf|-Inf|NaN)$"
)


def assert_valid_exposition(text: str) -> None:
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        assert SAMPLE.match(line), line


def test_counter_gauge_and_labels_render_in_text_format() -> None:
    consumed = metrics.EVENTS_CONSUMED
    consumed.labels(service="t-render", type="card.encoded").inc()
    consumed.labels(service="t-render", type="card.encoded").inc(2)
    consumed.labels(service="t-render", type='odd"name\\').inc()
    metrics.CONSUMER_LAG.labels(service="t-render", topic="t.keymgmt", partition="0").set(7)
    text = metrics.render()
    assert_valid_exposition(text)
    assert "# TYPE bureau_events_consumed_total counter" in text
    assert 'bureau_events_consumed_total{service="t-render",type="card.encoded"} 3.0' in text
    assert 'bureau_events_consumed_total{service="t-render",type="odd\\"name\\\\"} 1.0' in text
    assert 'bureau_consumer_lag{partition="0",service="t-render",topic="t.keymgmt"} 7.0' in text


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    hist = metrics.HSM_OPERATION_SECONDS.labels(operation="t-derive")
    for value in (0.05, 0.5, 0.5, 3.0):
        hist.observe(value)
    text = metrics.render()
    assert_valid_exposition(text)
    series = "bureau_hsm_operation_seconds"
    assert f'{series}_bucket{{le="0.0001",operation="t-derive"}} 0.0' in text
    assert f'{series}_bucket{{le="0.05",operation="t-derive"}} 1.0' in text
    assert f'{series}_bucket{{le="0.5",operation="t-derive"}} 3.0' in text
    assert f'{series}_bucket{{le="2.5",operation="t-derive"}} 3.0' in text
    assert f'{series}_bucket{{le="5.0",operation="t-derive"}} 4.0' in text
    assert f'{series}_bucket{{le="+Inf",operation="t-derive"}} 4.0' in text
    assert f'{series}_sum{{operation="t-derive"}} 4.05' in text
    assert f'{series}_count{{operation="t-derive"}} 4.0' in text


def test_a_timed_block_is_recorded_even_when_it_raises() -> None:
    hist = metrics.HSM_OPERATION_SECONDS.labels(operation="t-sign")
    with hist.time():
        pass
    with pytest.raises(RuntimeError), hist.time():
        raise RuntimeError("token removed")
    count = metrics.REGISTRY.get_sample_value(
        "bureau_hsm_operation_seconds_count", {"operation": "t-sign"}
    )
    assert count == 2


def test_an_hsm_call_is_timed_under_its_function_name() -> None:
    def t_seal_cards() -> None:
        pass

    with metrics.time_hsm_operation(t_seal_cards):
        pass
    with metrics.time_hsm_operation(functools.partial(t_seal_cards)):
        pass
    for operation in ("t_seal_cards", "other"):
        count = metrics.REGISTRY.get_sample_value(
            "bureau_hsm_operation_seconds_count", {"operation": operation}
        )
        assert count == 1, operation


def test_misuse_is_refused() -> None:
    with pytest.raises(ValueError, match="label"):
        metrics.CARDS.labels(kind="x")
    with pytest.raises(ValueError, match="non-negative"):
        metrics.CARDS.labels(service="t-misuse", stage="encoded").inc(-1)
    with pytest.raises(ValueError, match="Duplicated"):
        Counter("bureau_cards_total", "again", ("service", "stage"), registry=metrics.REGISTRY)
    # Every counter is exposed under a name that ends in _total.
    text = metrics.render()
    counters = [m.name for m in metrics.REGISTRY.collect() if m.type == "counter"]
    assert counters
    for name in counters:
        assert f"# TYPE {name}_total counter" in text


def test_dead_letter_reasons_become_bounded_labels() -> None:
    assert metrics.dead_letter_reason("poison: unknown issuer") == "poison"
    assert metrics.dead_letter_reason("handler failed: KeyError('x')") == "handler_failed"
    assert metrics.dead_letter_reason("undecodable: bad json") == "undecodable"
    assert metrics.dead_letter_reason("a card number 4111...") == "other"


def test_a_card_event_names_the_stage_it_counts() -> None:
    card, batch = uuid.uuid4(), uuid.uuid4()
    encoded = events.CardEncoded(
        issuer_id="acme",
        actor="station",
        card_id=card,
        batch_id=batch,
        chip_serial="A1B2C3D4E5F6",
        station_id="s1",
        reader="r1",
        apdu_count=7,
    )
    assert card_stage(encoded) == ("encoded", 1)

    def shipment(kind: str) -> events.ShipmentDispatched:
        return events.ShipmentDispatched(
            issuer_id="acme",
            actor="fulfillment",
            shipment_id=uuid.uuid4(),
            batch_id=batch,
            kind=kind,
            card_ids=[uuid.uuid4() for _ in range(3)],
            courier="post",
            manifest_sha256="0" * 64,
        )

    assert card_stage(shipment("cards")) == ("dispatched", 3)
    assert card_stage(shipment("pin_mailers")) is None
    received = events.StockReceived(
        issuer_id="acme", actor="operator", lot_id="L1", product_id="p", quantity=5
    )
    assert card_stage(received) is None


def test_every_bureau_metric_is_exposed_by_the_app(tmp_path: Path) -> None:
    runtime = ServiceRuntime(
        name="metricsdemo", settings=BureauSettings(environment="test"), migrations=tmp_path
    )
    app = create_app(runtime, title="metrics demo")  # not started: /metrics needs no stack
    metrics.count_card("encoded")
    metrics.count_error("keymgmt_unavailable")
    with metrics.APDU_SECONDS.labels(reader="Reader 0", ins="E2").time():
        pass
    # A client outside `with` does not run the lifespan, so the runtime is never started.
    response = TestClient(app).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert_valid_exposition(response.text)
    for name in (
        "bureau_events_consumed_total",
        "bureau_events_published_total",
        "bureau_events_dead_lettered_total",
        "bureau_consumer_lag",
        "bureau_cards_total",
        "bureau_errors_total",
        "bureau_hsm_operation_seconds",
        "bureau_apdu_seconds",
        "bureau_printer_up",
        "bureau_print_jobs_total",
        "bureau_print_jobs_waiting",
    ):
        assert f"# TYPE {name} " in response.text
    assert 'bureau_cards_total{service="metricsdemo",stage="encoded"}' in response.text
    assert 'bureau_errors_total{kind="keymgmt_unavailable",service="metricsdemo"} 1.0' in (
        response.text
    )
    # A healthy service charts zero failures, not "no data".
    for kind in metrics.ERROR_KINDS:
        assert f'bureau_errors_total{{kind="{kind}",service="metricsdemo"}} 0.0' in response.text
    assert 'bureau_events_duplicate_total{service="metricsdemo"} 0.0' in response.text
