"""The Kafka bus: an idempotent acks=all producer and a consumer that commits offsets only
after each event's effect is durable (ARCHITECTURE.md, delivery guarantees).

Per record: decode -> inbox insert (by event_id) + handler effect + emitted events, all in ONE
transaction -> commit offsets after the whole fetched batch. An undecodable record, or one a
handler declares poison, goes to the dead-letter topic through the outbox, with a
`dead_letter.recorded` event that audit counts. Nothing is silently dropped.

Provenance (shared/events/producers.py): a handled type from another topic than its producer's
is forged: dead-lettered before the inbox and any handler, reason `forged: type=T topic=X
producer=P` (the notice audit keeps as a security event), counted in bureau_forged_events_total.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Final

from aiokafka import AIOKafkaConsumer
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import metrics
from shared.db import checked_identifier, transaction
from shared.dead_letter import record_dead_letter
from shared.events import Event, UndecodableEvent, decode_event
from shared.events.producers import forgeable, forgery, parse_forgery
from shared.handlers import BatchHandler, HandlerTable, PoisonEvent
from shared.inbox import record_in_inbox, record_many_in_inbox
from shared.kafka_access import DEAD_LETTER_STREAM as DEAD_LETTER_STREAM
from shared.kafka_client import KafkaSecurity, client_options
from shared.kafka_client import ensure_topics as ensure_topics
from shared.kafka_client import make_producer as make_producer
from shared.outage import KAFKA, report_failure
from shared.outbox import OutboxRelay, RepositoryFactory, UnitOfWork
from shared.telemetry import continue_trace, echo_span, tracer
from shared.unreadable import UNREADABLE_ERRORS, step_past_unreadable

log = logging.getLogger(__name__)


def decode_record(record: Any) -> Event:
    """The record's event; UndecodableEvent for anything else (no value, bytes that are not
    UTF-8 JSON, an unknown contract). The key and headers are never read: they carry nothing
    the consumer needs, and any producer on the cluster may put any bytes there."""
    value = record.value
    if not isinstance(value, bytes | bytearray):
        raise UndecodableEvent(f"<root>: no event bytes ({type(value).__name__})")
    try:
        return decode_event(bytes(value))
    except UndecodableEvent:
        raise
    except (ValueError, TypeError, RecursionError) as exc:  # not UTF-8, nested too deep
        raise UndecodableEvent(f"<root>: {exc.__class__.__name__}: {str(exc)[:200]}") from exc


class ForgedEvent(ValueError):
    """A record of a type whose producer is another service than its topic's."""


# The broker answers a fetch when it holds this much for the consumer, or after the wait: at
# a floor's pace a fetch then brings several records, applied in one transaction (one commit,
# one inbox and one outbox statement), instead of one fetch and one transaction per record.
# Each hop waits at most FETCH_MAX_WAIT_MS more; a card crosses about six.
FETCH_MIN_BYTES: Final = 16_384
FETCH_MAX_WAIT_MS: Final = 200


def _count_consumed(events: Iterable[Event]) -> None:
    for event in events:
        metrics.EVENTS_CONSUMED.labels(service=metrics.service_name(), type=event.type).inc()


class EventConsumer:
    """Applies a service's HANDLERS table to the topics it subscribes to."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        schema: str,
        relay: OutboxRelay,
        bootstrap: str,
        group_id: str,
        topics: Sequence[str],
        handlers: HandlerTable,
        emit_topic: str,
        dead_letter_topic: str,
        max_attempts: int = 5,
        max_records: int = 200,
        repository: RepositoryFactory[Any] | None = None,
        security: KafkaSecurity | None = None,
    ) -> None:
        self._engine = engine
        self._security = security
        self._repository = repository
        self._schema = checked_identifier(schema)
        self._relay = relay
        self._group_id = group_id
        self._topics = list(topics)
        self._handlers = handlers
        self._emit_topic = emit_topic
        # Every service's topic is `<prefix>.<service>`, this one's own too.
        self._topic_prefix = emit_topic.rpartition(".")[0]
        self._start_forged_counts()
        self._dlq_topic = dead_letter_topic
        self._max_attempts = max_attempts
        self._max_records = max_records
        self._bootstrap = bootstrap
        self._consumer: AIOKafkaConsumer | None = None
        self.processed = 0
        self.duplicates = 0
        self.dead_lettered = 0
        self.ready = asyncio.Event()
        self._tracer = tracer(f"bus.{group_id}")
        self._lag_measured_at = 0.0

    def _start_forged_counts(self) -> None:
        """bureau_forged_events_total starts at 0 for each (type, topic) this consumer would
        refuse, so the first forgery shows as an increase of a series already there."""
        for kind, topic in forgeable(self._handlers, self._topics, self._topic_prefix):
            metrics.FORGED_EVENTS.labels(service=metrics.service_name(), type=kind, topic=topic)

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            *self._topics,
            **client_options(self._bootstrap, self._security),
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=self._max_records,
            metadata_max_age_ms=10_000,
            fetch_min_bytes=FETCH_MIN_BYTES,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        self._consumer = consumer
        self.ready.clear()
        await consumer.start()
        try:
            while True:
                try:
                    batches = await consumer.getmany(timeout_ms=500, max_records=self._max_records)
                except UNREADABLE_ERRORS:  # a record aiokafka cannot unpack (shared/unreadable)
                    await step_past_unreadable(consumer, self.deliver, self._dead_letter_retried)
                    continue
                if consumer.assignment():
                    self.ready.set()
                await self._measure_lag(consumer)
                if not batches:
                    continue
                # Every partition's records in one unit of work, each partition's in its order.
                await self.deliver([record for records in batches.values() for record in records])
                await consumer.commit()
                KAFKA.up()
        finally:
            self.ready.clear()
            self._consumer = None
            await consumer.stop()

    async def deliver(self, records: Sequence[Any]) -> None:
        """Apply fetched records (of one partition or several, each partition's in its order),
        durably, before their offsets are committed:
        the batch fast path, else record by record with retries and dead-lettering. Records are
        anything with Kafka's ConsumerRecord fields (topic, partition, offset, key, value,
        headers): run() hands it the broker's, tests hand it records made in process."""
        if not await self._apply_batch(records):
            for record in records:
                await self._apply_with_retries(record)

    async def _measure_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Records behind each assigned partition's end (metrics), at most once a second."""
        now = asyncio.get_running_loop().time()
        if now - self._lag_measured_at < 1.0:
            return
        self._lag_measured_at = now
        try:
            for tp in consumer.assignment():
                highwater = consumer.highwater(tp)
                if highwater is None:
                    continue  # no fetch answered for it yet
                behind = max(highwater - await consumer.position(tp), 0)
                metrics.CONSUMER_LAG.labels(
                    service=metrics.service_name(), topic=tp.topic, partition=str(tp.partition)
                ).set(behind)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a rebalance in between: a metric never stops the consumer
            log.debug("consumer lag not measured: %r", exc)

    async def _apply_batch(self, records: Sequence[Any]) -> bool:
        """Fast path: the fetched records in ONE transaction (one fsync, one inbox
        statement, one outbox statement). Any failure rolls the whole batch back and returns
        False; the caller then replays it record by record, where retries and dead-lettering
        decide each event on its own."""
        if len(records) < 2:
            return False
        decoded: list[tuple[Any, Event]] = []
        for record in records:
            try:
                event = decode_record(record)
            except UndecodableEvent:
                return False
            if self._handlers.get(type(event)):
                if forgery(event, record.topic, self._topic_prefix):
                    return False  # dead-lettered record by record
                decoded.append((record, event))
        if not decoded:
            return True
        try:
            async with transaction(self._engine) as conn:
                fresh = await record_many_in_inbox(conn, self._schema, decoded)
                uow: UnitOfWork[Any] = UnitOfWork(
                    conn,
                    self._schema,
                    self._emit_topic,
                    buffered=True,
                    repository=self._repository,
                )
                pending = set(fresh)
                todo: list[Event] = []
                for _record, event in decoded:
                    if event.event_id in pending:  # else seen before, or twice in this batch
                        pending.discard(event.event_id)
                        todo.append(event)
                for run in self._runs(todo):
                    await self._handle_run(uow, run)
                await uow.flush()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("batch path failed (%r); replaying record by record", exc)
            return False
        self.processed += len(fresh)
        self.duplicates += len(decoded) - len(fresh)
        # Each fresh event once, even when the batch held it twice.
        _count_consumed({e.event_id: e for _r, e in decoded if e.event_id in fresh}.values())
        metrics.EVENTS_DUPLICATE.labels(service=metrics.service_name()).inc(
            len(decoded) - len(fresh)
        )
        if uow.emitted:
            self._relay.wake()
        return True

    def _runs(self, events: Sequence[Event]) -> list[list[Event]]:
        """Consecutive events of one type whose handlers all take batches form one run; any
        other event is a run of its own. Order between runs is the records' order."""
        runs: list[list[Event]] = []
        for event in events:
            batchable = all(isinstance(h, BatchHandler) for h in self._handlers[type(event)])
            if batchable and runs and type(runs[-1][0]) is type(event):
                runs[-1].append(event)
            else:
                runs.append([event])
        return runs

    async def _handle_run(self, uow: UnitOfWork[Any], run: Sequence[Event]) -> None:
        first = run[0]
        if len(run) == 1:
            attributes = {"event.type": first.type, "event.id": str(first.event_id)}
            with (
                continue_trace(first.trace),
                self._tracer.start_as_current_span(f"consume {first.type}", attributes=attributes),
            ):
                for handler in self._handlers[type(first)]:
                    await handler(uow, first)
            return
        # One span for the run, in the first event's trace, echoed into each other event's own
        # trace; a batch handler that emits per event carries each source event's own trace on
        # what it emits.
        with (
            continue_trace(first.trace),
            self._tracer.start_as_current_span(
                f"consume {first.type} x{len(run)}",
                attributes={"event.type": first.type, "event.count": len(run)},
            ) as span,
        ):
            for handler in self._handlers[type(first)]:
                if isinstance(handler, BatchHandler):  # always, by _runs
                    await handler.fn(uow, run)
        echo_span(self._tracer, span, [event.trace for event in run[1:]])

    async def _apply_with_retries(self, record: Any, verdict: str | None = None) -> None:
        """Apply one record, or dead-letter it; never gives up on an outage (the database or
        Kafka away is retried without limit and logged once, by shared.outage), and retries
        a failing handler `max_attempts` times. Dead-lettering is retried the same way."""
        attempt = 0
        while True:
            attempt += 1
            try:
                if verdict is None:
                    await self._apply(record)
                else:
                    await self._dead_letter(record, verdict)
                return
            except asyncio.CancelledError:
                raise
            except PoisonEvent as exc:
                verdict = f"poison: {exc}"
                continue
            except UndecodableEvent as exc:
                verdict = f"undecodable: {exc}"
                continue
            except ForgedEvent as exc:
                verdict = str(exc)
                continue
            except Exception as exc:
                if report_failure(exc):
                    metrics.count_error("transient")
                else:
                    metrics.count_error("handler")
                    if verdict is None and attempt >= self._max_attempts:
                        log.exception("handler failed %d times; dead-lettering", attempt)
                        verdict = f"handler failed: {exc!r}"
                        continue
                    log.warning("handler failed, retrying", extra={"error": repr(exc)})
                await asyncio.sleep(min(0.2 * 2 ** min(attempt, 5), 5.0))

    async def _dead_letter_retried(self, record: Any, reason: str) -> None:
        """Dead-letter `record` with `reason`, retried like any record (an outage waits)."""
        await self._apply_with_retries(record, verdict=reason)

    async def _apply(self, record: Any) -> None:
        event = decode_record(record)
        handlers = self._handlers.get(type(event), ())
        if not handlers:
            return
        forged = forgery(event, record.topic, self._topic_prefix)
        if forged is not None:
            raise ForgedEvent(forged)
        with (
            continue_trace(event.trace),
            self._tracer.start_as_current_span(
                f"consume {event.type}",
                attributes={"event.type": event.type, "event.id": str(event.event_id)},
            ),
        ):
            async with transaction(self._engine) as conn:
                first_time = await record_in_inbox(conn, self._schema, event, record)
                if not first_time:
                    self.duplicates += 1
                    metrics.EVENTS_DUPLICATE.labels(service=metrics.service_name()).inc()
                    return
                uow: UnitOfWork[Any] = UnitOfWork(
                    conn, self._schema, self._emit_topic, repository=self._repository
                )
                for handler in handlers:
                    await handler(uow, event)
        self.processed += 1
        _count_consumed([event])
        if uow.emitted:
            self._relay.wake()

    async def _dead_letter(self, record: Any, reason: str) -> None:
        """The raw record to the DLQ topic and a counted event, in one transaction, at most
        once (shared/dead_letter.py: nothing of the record is decoded, and it always fits)."""
        async with transaction(self._engine) as conn:
            source = await record_dead_letter(
                conn,
                schema=self._schema,
                consumer=self._group_id,
                dead_letter_topic=self._dlq_topic,
                emit_topic=self._emit_topic,
                record=record,
                reason=reason,
            )
        self.dead_lettered += 1
        metrics.EVENTS_DEAD_LETTERED.labels(
            service=metrics.service_name(), reason=metrics.dead_letter_reason(reason)
        ).inc()
        forged = parse_forgery(reason)
        if forged is not None:
            labels = {"type": forged["type"], "topic": forged["topic"]}
            metrics.FORGED_EVENTS.labels(service=metrics.service_name(), **labels).inc()
        log.error("event dead-lettered", extra={"source": source, "reason": reason[:300]})
        self._relay.wake()
