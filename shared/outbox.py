"""Transactional outbox (ARCHITECTURE.md, delivery guarantees).

A handler's state change and the events it emits are written in ONE transaction through a
UnitOfWork; the relay publishes outbox rows to Kafka (acks=all, idempotent producer) and only
then deletes them. A crash between publish and delete republishes, and consumers' inboxes drop
the duplicate by event_id: effectively once.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar, overload
from uuid import UUID

from sqlalchemy import event as sa_event
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import metrics
from shared.db import checked_identifier, transaction
from shared.events import Event, ShipmentDispatched, encode_event
from shared.events.producers import UndeclaredProducer, check_emit
from shared.relay import OutboxRelay as OutboxRelay  # the relay of these rows
from shared.telemetry import current_trace_context

log = logging.getLogger(__name__)


OutboxRow = tuple[UUID, str, str, bytes, dict[str, str]]
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
        """Add `event` to the outbox. A service emits only the types it is declared to produce
        (shared/events/producers.py), on its own topic `<prefix>.<service>`: anything else is
        refused with UndeclaredProducer naming the type."""
        service = self.default_topic.rpartition(".")[2]
        check_emit(service, event)
        if topic not in (None, self.default_topic):
            raise UndeclaredProducer(f"{service} writes {event.type} only to its own topic")
        topic = self.default_topic
        if event.trace is None:
            trace_ctx = current_trace_context()
            if trace_ctx is not None:
                event = event.model_copy(update={"trace": trace_ctx})
        row: OutboxRow = (
            event.event_id,
            topic,
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
    async with transaction(engine) as conn:
        uow: UnitOfWork[Any] = UnitOfWork(
            conn, schema, default_topic, buffered=True, repository=repository
        )
        yield uow
        await uow.flush()
