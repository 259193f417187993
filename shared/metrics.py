"""The bureau's Prometheus metrics (prometheus-client), served at `/metrics` (shared/service.py).

Every metric the Grafana dashboard charts (deploy/k8s/observability/grafana-dashboard.json) is
defined here, once per process, in the bureau's own registry; label values come from code
(event types, stages, operations, readers), never from cardholder data. Where each is recorded:
- `bureau_events_consumed_total`, `..._duplicate_total`, `..._dead_lettered_total`,
  `bureau_consumer_lag`: the event consumer (shared/bus.py).
- `bureau_events_published_total`, `bureau_outbox_parked_total`: the outbox relay
  (shared/outbox.py).
- `bureau_task_restarts_total{service,task}`: the supervisor of long-running tasks
  (shared/supervise.py).
- `bureau_cards_total{service,stage}`: a card event's transaction commits (shared/outbox.py).
- `bureau_errors_total{service,kind}`: handled failures that are retried: a handler or the
  infrastructure under it (shared/bus.py), the outbox relay (shared/outbox.py).
- `bureau_hsm_operation_seconds{operation}`: every call dispatched to keymgmt's HSM worker
  (`time_hsm_operation`, at `Hsm.call` and `Hsm.run`).
- `bureau_apdu_seconds{reader,ins}`: every PC/SC exchange (shared/pcsc), stations and QA.
- `bureau_printer_*`, `bureau_print_jobs_*`: the print spooler (graphical).
The `service` label is the process' service, set once by create_app (one service per process
in production; tests running several runtimes in one process share the metrics).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.context_managers import Timer

# The text format 0.0.4 every Prometheus and the collector's receiver read; no `_created`
# series, which the dashboard does not use (it would double every counter's scrape).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry()

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
DEAD_LETTER_REASONS = ("undecodable", "poison", "handler_failed", "forged", "other")
# handler: a handler raised and its event is retried (then dead-lettered); transient: the
# database or Kafka under a handler failed; outbox_relay: publishing the outbox failed.
ERROR_KINDS = ("handler", "transient", "outbox_relay")

EVENTS_CONSUMED = Counter(
    "bureau_events_consumed_total",
    "Events applied by a handler (first delivery only), per event type.",
    ("service", "type"),
    registry=REGISTRY,
)
EVENTS_DUPLICATE = Counter(
    "bureau_events_duplicate_total",
    "Redelivered events dropped by the inbox (already applied).",
    ("service",),
    registry=REGISTRY,
)
EVENTS_DEAD_LETTERED = Counter(
    "bureau_events_dead_lettered_total",
    "Records sent to the dead-letter topic, per reason (undecodable, poison, handler).",
    ("service", "reason"),
    registry=REGISTRY,
)
FORGED_EVENTS = Counter(
    "bureau_forged_events_total",
    "Records dead-lettered as forged: a type on another service's topic than its producer's"
    " (shared/events/producers.py), per type and topic.",
    ("service", "type", "topic"),
    registry=REGISTRY,
)
EVENTS_PUBLISHED = Counter(
    "bureau_events_published_total",
    "Outbox rows published to Kafka (acked by all in-sync replicas), per topic.",
    ("service", "topic"),
    registry=REGISTRY,
)
OUTBOX_PARKED = Counter(
    "bureau_outbox_parked_total",
    "Outbox rows the broker kept refusing, parked for an operator to replay.",
    ("service",),
    registry=REGISTRY,
)
TASK_RESTARTS = Counter(
    "bureau_task_restarts_total",
    "Long-running tasks (consumer, relay, workers) restarted by their supervisor.",
    ("service", "task"),
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "bureau_consumer_lag",
    "Records between the consumer's position and the partition's high watermark.",
    ("service", "topic", "partition"),
    registry=REGISTRY,
)
CARDS = Counter(
    "bureau_cards_total",
    "Cards that reached a stage (prepared, encoded, printed, qa_passed, spoiled, ...).",
    ("service", "stage"),
    registry=REGISTRY,
)
ERRORS = Counter(
    "bureau_errors_total",
    "Handled failures that were retried or reported, per kind.",
    ("service", "kind"),
    registry=REGISTRY,
)
HSM_OPERATION_SECONDS = Histogram(
    "bureau_hsm_operation_seconds",
    "Latency of one PKCS#11 operation, queueing on the HSM worker included.",
    ("operation",),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
APDU_SECONDS = Histogram(
    "bureau_apdu_seconds",
    "Latency of one command APDU and its response, per reader and instruction.",
    ("reader", "ins"),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
PRINTER_UP = Gauge(
    "bureau_printer_up",
    "1 when the printer answered its last request.",
    ("printer",),
    registry=REGISTRY,
)
PRINT_OUTCOMES = Counter(
    "bureau_print_jobs_total",
    "Print job steps by outcome: submitted, printed, spoiled, rejected, unreachable.",
    ("printer", "outcome"),
    registry=REGISTRY,
)
PRINT_WAITING = Gauge(
    "bureau_print_jobs_waiting",
    "Print jobs not finished yet.",
    ("printer",),
    registry=REGISTRY,
)

ICC_POOL_FREE = Gauge(
    "bureau_icc_key_pool_free",
    "Free ICC key pairs in keymgmt's pool (set on every refill check and refill).",
    ("service",),
    registry=REGISTRY,
)

_service_name = "unknown"


def set_service_name(name: str) -> None:
    """The `service` label of this process' metrics (create_app sets it). The failure series
    start at 0, so a healthy service charts "0 errors" rather than no data."""
    global _service_name
    _service_name = name
    EVENTS_DUPLICATE.labels(service=name)
    OUTBOX_PARKED.labels(service=name)
    for reason in DEAD_LETTER_REASONS:
        EVENTS_DEAD_LETTERED.labels(service=name, reason=reason)
    for kind in ERROR_KINDS:
        ERRORS.labels(service=name, kind=kind)


def service_name() -> str:
    return _service_name


def dead_letter_reason(reason: str) -> str:
    """A bounded label from a free-text dead-letter reason: its kind before the colon."""
    kind = reason.split(":", 1)[0].strip().replace(" ", "_")
    return kind if kind in DEAD_LETTER_REASONS else "other"


def count_card(stage: str, cards: int = 1) -> None:
    """`cards` cards reached `stage` in this service; counted once their transaction commits."""
    CARDS.labels(service=_service_name, stage=stage).inc(cards)


def count_error(kind: str) -> None:
    ERRORS.labels(service=_service_name, kind=kind).inc()


def time_hsm_operation(fn: Callable[..., object]) -> Timer:
    """Times one call dispatched to the HSM worker (queueing included), named by its function."""
    return HSM_OPERATION_SECONDS.labels(operation=getattr(fn, "__name__", "other")).time()


def render() -> str:
    return generate_latest(REGISTRY).decode()


def set_icc_pool_free(free: int) -> None:
    """keymgmt's free ICC key pairs (only keymgmt sets it, so only keymgmt exposes the series)."""
    ICC_POOL_FREE.labels(_service_name).set(free)
