"""Transactional outbox (ARCHITECTURE.md, delivery guarantees).

A handler's state change and the events it emits are written in ONE transaction through a
UnitOfWork; the relay publishes outbox rows to Kafka (acks=all, idempotent producer) and only
then deletes them. A crash between publish and delete republishes, and consumers' inboxes drop
the duplicate by event_id: effectively once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar, overload
from uuid import UUID

from aiokafka import errors as kafka_errors
from sqlalchemy import event as sa_event
from sqlalchemy import text
from sqlalchemy.engine import Connection, Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import metrics
from shared.db import checked_identifier
from shared.events import Event, ShipmentDispatched, encode_event
from shared.outage import DATABASE, KAFKA, is_outage, report_failure
from shared.telemetry import current_trace_context

log = logging.getLogger(__name__)


OutboxRow = tuple[UUID, str, str, bytes, dict[str, str]]
# The idempotent producer's own state broke (a refused batch leaves its sequence numbers out of
# step with the broker's): no fault of the row. The relay renews the producer and tries again.
_PRODUCER_STATE: tuple[type[BaseException], ...] = (
    kafka_errors.OutOfOrderSequenceNumber,
    kafka_errors.UnknownProducerId,
    kafka_errors.InvalidProducerEpoch,
)
RepoT = TypeVar("RepoT")
RepositoryFactory = Callable[[AsyncConnection], RepoT]


class UnitOfWork(Generic[RepoT]):
    """One transaction of one service: its connection, its repository on that connection, and
    the events it emits. The entrypoint that owns the transaction (an HTTP request through
    ServiceRuntime.unit_of_work(), or the consumer for a consumed event) commits, flushes the
    outbox and wakes the relay; domain code and handlers never commit."""

    @overload
    def __init__(
        self: UnitOfWork[None],
        conn: AsyncConnection,
        schema: str,
        default_topic: str,
        *,
        buffered: bool = False,
        repository: None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        conn: AsyncConnection,
        schema: str,
        default_topic: str,
        *,
        buffered: bool = False,
        repository: RepositoryFactory[RepoT] | None = None,
    ) -> None: ...

    def __init__(
        self,
        conn: AsyncConnection,
        schema: str,
        default_topic: str,
        *,
        buffered: bool = False,
        repository: RepositoryFactory[RepoT] | None = None,
    ) -> None:
        self.conn = conn
        self.schema = checked_identifier(schema)
        self.default_topic = default_topic
        self.emitted: list[Event] = []
        # Every event emitted, also those forget_emitted() dropped from `emitted`.
        self.emit_count = 0
        # Buffered units (the consumer's batches) write their rows in one statement at flush();
        # unbuffered ones write at once, so an entrypoint cannot lose an event by not flushing.
        self._buffered = buffered
        self._pending: list[OutboxRow] = []
        self._repo = repository(conn) if repository is not None else None
        # Cards per stage emitted, counted at commit: a Counter, so a 100,000-card order's unit
        # holds a few integers, not one entry per card.
        self._cards: Counter[str] = Counter()

    @property
    def repo(self) -> RepoT:
        """The service's repository, bound to this unit's connection (all SQL lives there)."""
        if self._repo is None:
            raise RuntimeError("this unit of work was made without the service's repository")
        return self._repo

    async def emit(self, event: Event, topic: str | None = None) -> None:
        if event.trace is None:
            trace_ctx = current_trace_context()
            if trace_ctx is not None:
                event = event.model_copy(update={"trace": trace_ctx})
        row: OutboxRow = (
            event.event_id,
            topic or self.default_topic,
            event.partition_key(),
            encode_event(event),
            {},
        )
        self.emitted.append(event)
        self.emit_count += 1
        self._count_card_on_commit(event)
        if self._buffered:
            self._pending.append(row)
        else:
            await add_outbox_rows(self.conn, self.schema, [row])

    async def flush(self) -> None:
        rows, self._pending = self._pending, []
        await add_outbox_rows(self.conn, self.schema, rows)

    def forget_emitted(self) -> None:
        """Let go of the events kept in `emitted` once flushed (emit_count still counts them):
        a bulk order's 100,000 card events need not all stay in memory until it commits."""
        self.emitted.clear()

    def _count_card_on_commit(self, event: Event) -> None:
        """bureau_cards_total counts a card once the transaction that emitted its event commits,
        whichever entrypoint owns it: a rolled-back handler (retried, or a batch replayed record
        by record) counts nothing. The listener lives on this checkout of the connection only."""
        reached = card_stage(event)
        connection = self.conn.sync_connection
        if reached is None or connection is None:
            return
        if not self._cards:
            sa_event.listen(connection, "commit", self._count_cards, once=True)
        stage, count = reached
        self._cards[stage] += count

    def _count_cards(self, _connection: Connection) -> None:
        totals, self._cards = self._cards, Counter()
        for stage, count in totals.items():
            metrics.count_card(stage, count)


def card_stage(event: Event) -> tuple[str, int] | None:
    """The stage a card event records, and for how many cards: card.encoded -> encoded, a
    shipment of cards -> dispatched (one per card); None for any other event."""
    if event.type.startswith("card."):
        return event.type.removeprefix("card."), 1
    if isinstance(event, ShipmentDispatched) and event.kind == "cards":
        return "dispatched", len(event.card_ids)
    return None


async def add_outbox_rows(conn: AsyncConnection, schema: str, rows: list[OutboxRow]) -> None:
    if not rows:
        return
    await conn.execute(
        text(
            f"INSERT INTO {checked_identifier(schema)}.outbox"
            " (event_id, topic, key, payload, headers)"
            " VALUES (:event_id, :topic, :key, :payload, CAST(:headers AS jsonb))"
            " ON CONFLICT (event_id) DO NOTHING"
        ),
        [
            {"event_id": e, "topic": t, "key": k, "payload": p, "headers": json.dumps(h)}
            for e, t, k, p, h in rows
        ],
    )


@asynccontextmanager
async def unit_of_work(
    engine: AsyncEngine,
    schema: str,
    default_topic: str,
    repository: RepositoryFactory[Any] | None = None,
) -> AsyncIterator[UnitOfWork[Any]]:
    """An entrypoint's transaction: state changes and emitted events commit together."""
    async with engine.begin() as conn:
        uow: UnitOfWork[Any] = UnitOfWork(
            conn, schema, default_topic, buffered=True, repository=repository
        )
        yield uow
        await uow.flush()


class OutboxRelay:
    """Publishes a service's outbox. Woken at once after a local commit, else it polls.

    Order is kept per stream (topic and partition key, i.e. per card), not across the whole
    outbox: a row the broker refuses holds back only the rows of its own key. A refused row is
    retried alone (so it cannot take innocent rows of its batch down with it) and parked after
    `max_attempts` refusals: counted on `bureau_outbox_parked_total`, kept for an operator to
    replay (`python -m shared.outbox_admin`). An outage (database or Kafka away) is no
    refusal: nothing is counted against a row, the relay waits and tries again.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        schema: str,
        producer: Any,
        batch_size: int = 500,
        poll_interval: float = 0.5,
        max_attempts: int = 5,
        new_producer: Callable[[], Any] | None = None,
    ) -> None:
        self._engine = engine
        # Makes a fresh producer after a refusal (see _PRODUCER_STATE); None: keep the one given.
        self._new_producer = new_producer
        self._renew = False
        self._schema = checked_identifier(schema)
        self._producer = producer
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self.max_attempts = max_attempts
        self._wakeup = asyncio.Event()
        self.published = 0
        self.parked = 0

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        """Publish until cancelled. An outage is waited out here (logged once, by
        shared.outage); anything else ends the loop for the supervisor to restart."""
        backoff = 0.2
        while True:
            try:
                sent = await self.publish_once()
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not report_failure(exc):
                    raise
                metrics.count_error("outbox_relay")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if sent < self._batch_size:
                await self._idle()

    async def _idle(self) -> None:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation that
        # arrives as the event is set, and stop() then waited for a relay that went on.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._poll_interval):
                await self._wakeup.wait()
        self._wakeup.clear()

    async def publish_once(self) -> int:
        """Claim up to a batch of unparked rows, publish them, delete those the broker took and
        count a refusal against the others. Returns the rows published."""
        async with self._engine.begin() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT id, topic, key, payload, headers, attempts"
                        f" FROM {self._schema}.outbox WHERE parked_at IS NULL"
                        " ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED"
                    ),
                    {"n": self._batch_size},
                )
            ).all()
            DATABASE.up()
            if not rows:
                return 0
            published, refused = await self._publish(rows)
            if published:
                await conn.execute(
                    text(f"DELETE FROM {self._schema}.outbox WHERE id = ANY(:ids)"),
                    {"ids": [row.id for row in published]},
                )
            if refused:
                await self._count_refusals(conn, refused)
        if (refused or self._renew) and self._new_producer is not None:
            await self._renew_producer()
        self.published += len(published)
        for row in published:
            metrics.EVENTS_PUBLISHED.labels(service=metrics.service_name(), topic=row.topic).inc()
        return len(published)

    async def _publish(self, rows: Sequence[Row[Any]]) -> tuple[list[Row[Any]], dict[int, str]]:
        """Rows refused before alone first, one at a time, then the rest together, in id order
        per stream; a stream stops at its first refused row for this round."""
        blocked: set[tuple[str, str]] = set()
        refused: dict[int, str] = {}
        published: list[Row[Any]] = []
        outage: BaseException | None = None
        for row in (r for r in rows if r.attempts):
            if (row.topic, row.key) in blocked:
                continue
            error = await self._send_alone(row)
            if error is None:
                published.append(row)
            elif is_outage(error):
                outage = error
                blocked.add((row.topic, row.key))
            else:
                if (reason := self._refusal(error)) is not None:
                    refused[row.id] = reason
                blocked.add((row.topic, row.key))
        if outage is not None:
            raise outage
        sent: list[tuple[Row[Any], Any]] = []
        for row in (r for r in rows if not r.attempts):
            if (row.topic, row.key) in blocked:
                continue  # behind a refused row of its own card: keeps its order
            try:
                sent.append((row, await self._send(row)))
            except Exception as exc:
                if is_outage(exc):
                    raise
                if (reason := self._refusal(exc)) is not None:
                    refused[row.id] = reason
                blocked.add((row.topic, row.key))
        results = await asyncio.gather(*(f for _r, f in sent), return_exceptions=True)
        for (row, _future), result in zip(sent, results, strict=True):
            if not isinstance(result, BaseException):
                published.append(row)
            elif is_outage(result):
                outage = result
            elif (reason := self._refusal(result)) is not None:
                refused[row.id] = reason
        if published:
            KAFKA.up()
        if outage is not None and not published:
            raise outage
        return published, refused

    @property
    def producer(self) -> Any:
        return self._producer

    async def _renew_producer(self) -> None:
        assert self._new_producer is not None
        old, self._producer = self._producer, self._new_producer()
        self._renew = False
        await self._producer.start()
        with contextlib.suppress(Exception):
            await old.stop()

    def _refusal(self, error: BaseException) -> str | None:
        """What to count against a row for `error`; None when the producer is at fault."""
        if isinstance(error, _PRODUCER_STATE):
            self._renew = True
            return None
        return repr(error)

    async def _send(self, row: Row[Any]) -> Any:
        headers = [(k, str(v).encode()) for k, v in (row.headers or {}).items()]
        return await self._producer.send(
            row.topic, value=bytes(row.payload), key=row.key.encode(), headers=headers
        )

    async def _send_alone(self, row: Row[Any]) -> BaseException | None:
        try:
            await (await self._send(row))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return exc
        return None

    async def _count_refusals(self, conn: AsyncConnection, refused: dict[int, str]) -> None:
        parked = (
            await conn.execute(
                text(
                    f"UPDATE {self._schema}.outbox SET attempts = attempts + 1,"
                    " last_error = (CAST(:errors AS jsonb) ->> CAST(id AS text)),"
                    " parked_at = CASE WHEN attempts + 1 >= :max THEN now() END"
                    " WHERE id = ANY(:ids) RETURNING id, topic, key, attempts, parked_at"
                ),
                {
                    "ids": list(refused),
                    "errors": json.dumps({str(k): v[:2000] for k, v in refused.items()}),
                    "max": self.max_attempts,
                },
            )
        ).all()
        for row in parked:
            if row.parked_at is None:
                continue
            self.parked += 1
            metrics.OUTBOX_PARKED.labels(service=metrics.service_name()).inc()
            log.error(
                "outbox row parked after %d refusals; the rows behind it go on",
                row.attempts,
                extra={"row": row.id, "topic": row.topic, "error": refused[row.id][:300]},
            )
