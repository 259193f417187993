"""SQL of the append-only event log (projections are in repository.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audit.chain import (
    GENESIS_HASH,
    ChainEntry,
    event_document,
    leaf_hash,
)
from services.audit.repository import json_value
from shared.db import checked_identifier
from shared.events import Event

_EVENT_COLUMNS = (
    "seq, log_index, event_id, type, version, issuer_id, actor, occurred_at, recorded_at,"
    " card_id, batch_id, order_id, payload, leaf_hash, prev_hash, entry_hash"
)


def _within(
    where: list[str], params: dict[str, Any], start: datetime | None, end: datetime | None
) -> None:
    """Add an occurred_at window [start, end) to a query's conditions."""
    if start is not None:
        where.append("occurred_at >= :occurred_from")
        params["occurred_from"] = start
    if end is not None:
        where.append("occurred_at < :occurred_to")
        params["occurred_to"] = end


@dataclass(frozen=True)
class EventQuery:
    card_id: UUID | None = None
    batch_id: UUID | None = None
    type: str | None = None
    issuer_id: str | None = None
    after_seq: int = 0
    limit: int = 100
    actor: str | None = None
    occurred_from: datetime | None = None  # inclusive
    occurred_to: datetime | None = None  # exclusive


@dataclass(frozen=True)
class ControlQuery:
    """Filters of the dual-control steps (control.recorded entries): the act, the outcome, a
    principal (who took the step or started the act), the request or ceremony, the issuer and
    a time window on when the step happened."""

    act: str | None = None
    outcome: str | None = None
    principal: str | None = None
    subject_id: UUID | None = None
    issuer_id: str | None = None
    occurred_from: datetime | None = None  # inclusive
    occurred_to: datetime | None = None  # exclusive
    after_seq: int = 0
    limit: int = 100


class EventLog:
    def __init__(self, conn: AsyncConnection, schema: str) -> None:
        self._conn = conn
        self._s = checked_identifier(schema)
        digest = hashlib.sha256(f"{schema}.events append".encode()).digest()
        self._lock_key = int.from_bytes(digest[:7], "big")

    async def append_event(self, event: Event) -> int:
        """Chain the event after the last entry; returns its seq. One round trip: the
        append_entry function (migration 0005) locks the log's order, reads the last entry
        and inserts after it. (A head row updated per event would grow a chain of row
        versions inside a consumer batch's transaction: measured by bench/audit.)"""
        document = event_document(event)
        seq = (
            await self._conn.execute(
                text(
                    f"SELECT {self._s}.append_entry(:lock, :id, :type, :v, :issuer, :actor,"
                    " :at, :card, :batch, :order, CAST(:doc AS jsonb), :leaf)"
                ),
                {
                    "lock": self._lock_key,
                    "id": event.event_id,
                    "type": event.type,
                    "v": event.version,
                    "issuer": event.issuer_id,
                    "actor": event.actor,
                    "at": event.occurred_at,
                    "card": getattr(event, "card_id", None),
                    "batch": getattr(event, "batch_id", None),
                    "order": getattr(event, "order_id", None),
                    "doc": json.dumps(document),
                    "leaf": leaf_hash(document),
                },
            )
        ).scalar_one()
        return int(seq)

    async def find_events(self, query: EventQuery) -> list[dict[str, Any]]:
        where = ["seq > :after"]
        params: dict[str, Any] = {"after": query.after_seq, "n": query.limit}
        if query.card_id is not None:
            # shipment.dispatched names its cards in a list (GIN-indexed).
            where.append(
                "(card_id = :card OR payload -> 'card_ids' @> jsonb_build_array(CAST(:cs AS text)))"
            )
            params |= {"card": query.card_id, "cs": str(query.card_id)}
        for column in ("batch_id", "type", "issuer_id", "actor"):
            value = getattr(query, column)
            if value is not None:
                where.append(f"{column} = :{column}")
                params[column] = value
        _within(where, params, query.occurred_from, query.occurred_to)
        return await self._select_events(where, params)

    async def security_events(self, after_seq: int, limit: int) -> list[dict[str, Any]]:
        """The log's security events, in log order: the `dead_letter.recorded` notices of a
        record dead-lettered as forged (shared/events/producers.py), whichever service found
        it. Read through the (type, seq) index."""
        where = [
            "type = 'dead_letter.recorded'",
            "seq > :after",
            "payload ->> 'reason' LIKE 'forged:%'",
        ]
        return await self._select_events(where, {"after": after_seq, "n": limit})

    async def _select_events(
        self, where: list[str], params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Log entries matching every condition, in log order, at most `:n`."""
        rows = await self._conn.execute(
            text(
                f"SELECT {_EVENT_COLUMNS} FROM {self._s}.events WHERE {' AND '.join(where)}"
                " ORDER BY seq LIMIT :n"
            ),
            params,
        )
        return [{**row._asdict(), "payload": json_value(row.payload)} for row in rows]

    async def control_events(self, query: ControlQuery) -> list[dict[str, Any]]:
        """The log's dual-control steps, in log order, filtered (through the (type, seq)
        index: a step is a `control.recorded` entry)."""
        where = ["type = 'control.recorded'", "seq > :after"]
        params: dict[str, Any] = {"after": query.after_seq, "n": query.limit}
        for name in ("act", "outcome"):
            if getattr(query, name) is not None:
                where.append(f"payload ->> '{name}' = :{name}")
                params[name] = getattr(query, name)
        if query.principal is not None:
            where.append("(payload ->> 'principal' = :who OR payload ->> 'started_by' = :who)")
            params["who"] = query.principal
        if query.subject_id is not None:
            where.append("payload ->> 'subject_id' = :subject")
            params["subject"] = str(query.subject_id)
        if query.issuer_id is not None:
            where.append("issuer_id = :issuer")
            params["issuer"] = query.issuer_id
        _within(where, params, query.occurred_from, query.occurred_to)
        return await self._select_events(where, params)

    async def chain_entries(self, after_seq: int, limit: int) -> list[ChainEntry]:
        rows = await self._conn.execute(
            text(
                "SELECT seq, log_index, payload, leaf_hash, prev_hash, entry_hash"
                f" FROM {self._s}.events WHERE seq > :after ORDER BY seq LIMIT :n"
            ),
            {"after": after_seq, "n": limit},
        )
        return [ChainEntry(r[0], r[1], json_value(r[2]), r[3], r[4], r[5]) for r in rows]

    async def chain_position(self, seq: int) -> tuple[str, int]:
        """(entry_hash, next log index) of the entry at `seq`; the genesis for seq 0."""
        if seq <= 0:
            return GENESIS_HASH, 0
        row = (
            await self._conn.execute(
                text(f"SELECT entry_hash, log_index FROM {self._s}.events WHERE seq = :s"),
                {"s": seq},
            )
        ).first()
        if row is None:
            raise LookupError(f"no log entry with seq {seq}")
        return str(row[0]), int(row[1]) + 1
