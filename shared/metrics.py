"""Prometheus metrics of one service process, served as text at `/metrics` (shared/service.py).

A small registry written for the Prometheus text exposition format 0.0.4, so that no
dependency is needed for a handful of counters, gauges and histograms. Every metric is
labelled; label values come from code (event types, stages, operations), never from
cardholder data.

The metrics every service exposes (docs/deploy.md lists them with the dashboard):
- `bureau_events_consumed_total{service,type}`, `bureau_events_duplicate_total{service}`,
  `bureau_events_dead_lettered_total{service,reason}`: shared/bus.py.
- `bureau_events_published_total{service,topic}`: the outbox relay (shared/outbox.py).
- `bureau_consumer_lag{service,topic,partition}`: records behind the partition's end.
- `bureau_cards_total{service,stage}`: cards that reached a stage (`count_card`).
- `bureau_hsm_operation_seconds{operation}` and `bureau_apdu_seconds{reader,ins}`:
  latency histograms that keymgmt and the station agents record with `observe_seconds`.
- `bureau_errors_total{service,kind}`: failures that are handled and retried (`count_error`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds. HSM calls run from ~50 µs (a DES3 block) to ~0.5 s (RSA-2048 on a busy network HSM);
# an APDU from ~0.1 ms (virtual card) to seconds (a slow chip writing EEPROM).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

LabelValues = tuple[str, ...]
_service_name = "unknown"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{name}="{_escape(value)}"' for name, value in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labels: Sequence[str]) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self._lock = threading.Lock()  # the HSM worker thread records from outside the loop

    def _key(self, labels: dict[str, str]) -> LabelValues:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {sorted(labels)}")
        return tuple(str(labels[name]) for name in self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        if not name.endswith("_total"):
            raise ValueError("a counter's name ends in _total")
        super().__init__(name, help_text, labels)
        self._values: dict[LabelValues, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [
            f"{self.name}{_labels(self.label_names, key)} {_format_value(v)}" for key, v in items
        ]


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[LabelValues, float] = {}

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [
            f"{self.name}{_labels(self.label_names, key)} {_format_value(v)}" for key, v in items
        ]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labels)
        if list(buckets) != sorted(set(buckets)):
            raise ValueError("histogram buckets must be strictly increasing")
        self.buckets = tuple(buckets)
        # Per label set: counts per bucket (non-cumulative), the sum and the count.
        self._series: dict[LabelValues, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            counts, total = self._series.setdefault(key, ([0] * len(self.buckets), [0.0, 0.0]))
            for index, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[index] += 1
                    break
            total[0] += value
            total[1] += 1

    def count(self, **labels: str) -> int:
        series = self._series.get(self._key(labels))
        return int(series[1][1]) if series else 0

    def samples(self) -> list[str]:
        lines: list[str] = []
        with self._lock:
            items = sorted((k, (list(c), list(t))) for k, (c, t) in self._series.items())
        for key, (counts, (total, count)) in items:
            cumulative = 0
            for bound, in_bucket in zip(self.buckets, counts, strict=True):
                cumulative += in_bucket
                le = f'le="{_format_value(bound)}"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {cumulative}")
            inf = _labels(self.label_names, key, 'le="+Inf"')
            lines.append(f"{self.name}_bucket{inf} {_format_value(count)}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, key)} {_format_value(total)}")
            lines.append(
                f"{self.name}_count{_labels(self.label_names, key)} {_format_value(count)}"
            )
        return lines


M = TypeVar("M", bound=_Metric)


class Registry:
    """The metrics of one process, in the order they were registered."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def register(self, metric: M) -> M:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} is registered twice")
        self._metrics[metric.name] = metric
        return metric

    def metrics(self) -> list[_Metric]:
        return list(self._metrics.values())

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.extend(metric.header())
            lines.extend(metric.samples())
        return "\n".join(lines) + "\n"


REGISTRY = Registry()

EVENTS_CONSUMED = REGISTRY.register(
    Counter(
        "bureau_events_consumed_total",
        "Events applied by a handler (first delivery only), per event type.",
        ("service", "type"),
    )
)
EVENTS_DUPLICATE = REGISTRY.register(
    Counter(
        "bureau_events_duplicate_total",
        "Redelivered events dropped by the inbox (already applied).",
        ("service",),
    )
)
EVENTS_DEAD_LETTERED = REGISTRY.register(
    Counter(
        "bureau_events_dead_lettered_total",
        "Records sent to the dead-letter topic, per reason (undecodable, poison, handler).",
        ("service", "reason"),
    )
)
EVENTS_PUBLISHED = REGISTRY.register(
    Counter(
        "bureau_events_published_total",
        "Outbox rows published to Kafka (acked by all in-sync replicas), per topic.",
        ("service", "topic"),
    )
)
CONSUMER_LAG = REGISTRY.register(
    Gauge(
        "bureau_consumer_lag",
        "Records between the consumer's position and the partition's high watermark.",
        ("service", "topic", "partition"),
    )
)
CARDS = REGISTRY.register(
    Counter(
        "bureau_cards_total",
        "Cards that reached a stage (prepared, encoded, printed, qa_passed, spoiled, ...).",
        ("service", "stage"),
    )
)
ERRORS = REGISTRY.register(
    Counter(
        "bureau_errors_total",
        "Handled failures that were retried or reported, per kind.",
        ("service", "kind"),
    )
)
HSM_OPERATION_SECONDS = REGISTRY.register(
    Histogram(
        "bureau_hsm_operation_seconds",
        "Latency of one PKCS#11 operation, queueing on the HSM worker included.",
        ("operation",),
    )
)
APDU_SECONDS = REGISTRY.register(
    Histogram(
        "bureau_apdu_seconds",
        "Latency of one command APDU and its response, per reader and instruction.",
        ("reader", "ins"),
    )
)


def set_service_name(name: str) -> None:
    """The `service` label of this process' bus, outbox and card metrics (create_app sets it)."""
    global _service_name
    _service_name = name


def service_name() -> str:
    return _service_name


def dead_letter_reason(reason: str) -> str:
    """A bounded label from a free-text dead-letter reason: its kind before the colon."""
    kind = reason.split(":", 1)[0].strip().replace(" ", "_")
    return kind if kind in ("undecodable", "poison", "handler_failed") else "other"


def count_card(stage: str, cards: int = 1) -> None:
    """A card (or `cards` cards) reached `stage` in this service; call after the commit."""
    CARDS.inc(cards, service=_service_name, stage=stage)


def count_error(kind: str) -> None:
    ERRORS.inc(service=_service_name, kind=kind)


@contextmanager
def observe_seconds(histogram: Histogram, **labels: str) -> Iterator[None]:
    """Time the block into `histogram`, also when it raises (a failed HSM call took time too).

    with observe_seconds(HSM_OPERATION_SECONDS, operation="derive"):
        ...
    """
    started = time.perf_counter()
    try:
        yield
    finally:
        histogram.observe(time.perf_counter() - started, **labels)


def render() -> str:
    return REGISTRY.render()
