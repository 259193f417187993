"""shared/metrics.py: the Prometheus text format, the helpers services call, and /metrics."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shared import metrics
from shared.metrics import Counter, Gauge, Histogram, Registry, observe_seconds
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
    registry = Registry()
    consumed = registry.register(Counter("t_consumed_total", "consumed", ("type",)))
    lag = registry.register(Gauge("t_lag", "lag", ("partition",)))
    consumed.inc(type="card.encoded")
    consumed.inc(2, type="card.encoded")
    consumed.inc(type='odd"name\\')
    lag.set(7, partition="0")
    text = registry.render()
    assert_valid_exposition(text)
    assert "# TYPE t_consumed_total counter" in text
    assert 't_consumed_total{type="card.encoded"} 3' in text
    assert 't_consumed_total{type="odd\\"name\\\\"} 1' in text
    assert 't_lag{partition="0"} 7' in text


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    registry = Registry()
    hist = registry.register(Histogram("t_seconds", "latency", ("op",), buckets=(0.1, 1.0)))
    for value in (0.05, 0.5, 0.5, 3.0):
        hist.observe(value, op="derive")
    text = registry.render()
    assert_valid_exposition(text)
    assert 't_seconds_bucket{op="derive",le="0.1"} 1' in text
    assert 't_seconds_bucket{op="derive",le="1"} 3' in text
    assert 't_seconds_bucket{op="derive",le="+Inf"} 4' in text
    assert 't_seconds_sum{op="derive"} 4.05' in text
    assert 't_seconds_count{op="derive"} 4' in text


def test_observe_seconds_times_a_block_even_when_it_raises() -> None:
    hist = Histogram("t_hsm_seconds", "hsm", ("operation",))
    with observe_seconds(hist, operation="sign"):
        pass
    with pytest.raises(RuntimeError), observe_seconds(hist, operation="sign"):
        raise RuntimeError("token removed")
    assert hist.count(operation="sign") == 2


def test_misuse_is_refused() -> None:
    with pytest.raises(ValueError, match="_total"):
        Counter("t_events", "no suffix")
    counter = Counter("t_events_total", "events", ("type",))
    with pytest.raises(ValueError, match="labels"):
        counter.inc(kind="x")
    with pytest.raises(ValueError, match="only goes up"):
        counter.inc(-1, type="x")
    registry = Registry()
    registry.register(Counter("t_once_total", "once"))
    with pytest.raises(ValueError, match="twice"):
        registry.register(Counter("t_once_total", "again"))


def test_dead_letter_reasons_become_bounded_labels() -> None:
    assert metrics.dead_letter_reason("poison: unknown issuer") == "poison"
    assert metrics.dead_letter_reason("handler failed: KeyError('x')") == "handler_failed"
    assert metrics.dead_letter_reason("undecodable: bad json") == "undecodable"
    assert metrics.dead_letter_reason("a card number 4111...") == "other"


def test_every_bureau_metric_is_exposed_by_the_app(tmp_path: Path) -> None:
    runtime = ServiceRuntime(
        name="metricsdemo", settings=BureauSettings(environment="test"), migrations=tmp_path
    )
    app = create_app(runtime, title="metrics demo")  # not started: /metrics needs no stack
    metrics.count_card("encoded")
    metrics.count_error("keymgmt_unavailable")
    with observe_seconds(metrics.APDU_SECONDS, reader="Reader 0", ins="E2"):
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
    ):
        assert f"# TYPE {name} " in response.text
    assert 'bureau_cards_total{service="metricsdemo",stage="encoded"}' in response.text
