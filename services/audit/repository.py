"""SQL of the batch and card projections (the log's SQL is in log_repository.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audit.projection import BatchFacts, BatchStatus, CardRecord
from services.audit.service import Decision, Reconciliation
from shared.db import checked_identifier

_CARD_COLUMNS = [f.name for f in fields(CardRecord)]


@dataclass(frozen=True)
class BatchRow:
    facts: BatchFacts
    status: BatchStatus
    cards_known: int
    cards_ended: int
    cards_settled: int
    discrepancy_digest: str | None
    record: dict[str, Any] = field(default_factory=dict, compare=False)


def json_value(value: Any) -> Any:
    """jsonb comes back as text unless the driver has a codec."""
    return json.loads(value) if isinstance(value, str | bytes) else value


class AuditRepository:
    def __init__(self, conn: AsyncConnection, schema: str) -> None:
        self._conn = conn
        self._s = checked_identifier(schema)

    # --- batches -----------------------------------------------------------------------------
    async def lock_batch(self, batch_id: UUID, issuer_id: str, *, touch: bool) -> BatchRow:
        """The batch row, created by the first event that names it, locked to this transaction.
        `touch` records that an event arrived now (the sweep looks for quiet batches)."""
        row = (
            await self._conn.execute(
                text(
                    f"INSERT INTO {self._s}.batches AS b (batch_id, issuer_id) VALUES (:b, :i)"
                    " ON CONFLICT (batch_id) DO UPDATE SET last_event_at = CASE WHEN :touch"
                    " THEN clock_timestamp() ELSE b.last_event_at END RETURNING *"
                ),
                {"b": batch_id, "i": issuer_id, "touch": touch},
            )
        ).one()
        return _batch_row(row._mapping)

    async def existing_batch(self, batch_id: UUID, *, lock: bool) -> BatchRow | None:
        row = (
            await self._conn.execute(
                text(
                    f"SELECT * FROM {self._s}.batches WHERE batch_id = :b"
                    + (" FOR UPDATE" if lock else "")
                ),
                {"b": batch_id},
            )
        ).first()
        return None if row is None else _batch_row(row._mapping)

    async def save_batch_facts(
        self, facts: BatchFacts, order_id: UUID | None, product_id: str | None
    ) -> None:
        await self._conn.execute(
            text(
                f"UPDATE {self._s}.batches SET card_count = :count, stock_issued = :issued,"
                " stock_returned = :returned, order_id = coalesce(order_id, :order),"
                " product_id = coalesce(product_id, :product) WHERE batch_id = :b"
            ),
            {
                "b": facts.batch_id,
                "count": facts.card_count,
                "issued": facts.stock_issued,
                "returned": facts.stock_returned,
                "order": order_id,
                "product": product_id,
            },
        )

    async def count_cards(self, batch_id: UUID, known: int, ended: int, settled: int) -> BatchRow:
        row = (
            await self._conn.execute(
                text(
                    f"UPDATE {self._s}.batches SET cards_known = cards_known + :k,"
                    " cards_ended = cards_ended + :e, cards_settled = cards_settled + :s"
                    " WHERE batch_id = :b RETURNING *"
                ),
                {"b": batch_id, "k": known, "e": ended, "s": settled},
            )
        ).one()
        return _batch_row(row._mapping)

    async def record_decision(self, batch_id: UUID, decision: Decision, *, checked: bool) -> None:
        discrepancy = decision.discrepancy
        await self._conn.execute(
            text(
                f"UPDATE {self._s}.batches SET status = :status,"
                " counts = CAST(:counts AS jsonb),"
                " reconciled_at = CASE WHEN :reconciled THEN clock_timestamp()"
                " ELSE reconciled_at END,"
                " closed_at = CASE WHEN :closed THEN clock_timestamp() ELSE closed_at END,"
                " discrepancy = coalesce(CAST(:detail AS jsonb), discrepancy),"
                " discrepancy_digest = coalesce(CAST(:digest AS text), discrepancy_digest),"
                " discrepancy_at = CASE WHEN CAST(:digest AS text) IS NULL THEN discrepancy_at"
                " ELSE clock_timestamp() END,"
                " checked_at = CASE WHEN :checked THEN clock_timestamp() ELSE checked_at END"
                " WHERE batch_id = :b"
            ),
            {
                "b": batch_id,
                "status": decision.status,
                "counts": json.dumps(decision.report.counts),
                "reconciled": decision.reconciled is not None,
                "closed": decision.closed is not None,
                "detail": None if discrepancy is None else json.dumps(_detail(discrepancy)),
                "digest": None if discrepancy is None else discrepancy.digest(),
                "checked": checked,
            },
        )

    async def stale_batches(self, quiet_seconds: float, limit: int) -> list[UUID]:
        """Batches not closed, with no event for `quiet_seconds`, not checked since."""
        rows = await self._conn.execute(
            text(
                f"SELECT batch_id FROM {self._s}.batches WHERE status <> 'closed'"
                " AND last_event_at < clock_timestamp() - make_interval(secs => :q)"
                " AND (checked_at IS NULL OR checked_at < last_event_at)"
                " ORDER BY last_event_at LIMIT :n"
            ),
            {"q": quiet_seconds, "n": limit},
        )
        return [row[0] for row in rows]

    # --- cards -------------------------------------------------------------------------------
    async def lock_cards(
        self, card_ids: Sequence[UUID], batch_id: UUID, issuer_id: str
    ) -> tuple[dict[UUID, CardRecord], int]:
        """The cards, created when first named, locked. Returns them and how many are new."""
        created = await self._conn.execute(
            text(
                f"INSERT INTO {self._s}.cards (card_id, batch_id, issuer_id)"
                " SELECT unnest(CAST(:ids AS uuid[])), :b, :i ON CONFLICT (card_id) DO NOTHING"
                " RETURNING card_id"
            ),
            {"ids": list(card_ids), "b": batch_id, "i": issuer_id},
        )
        new = len(created.all())
        rows = await self._conn.execute(
            text(
                f"SELECT {', '.join(_CARD_COLUMNS)} FROM {self._s}.cards"
                " WHERE card_id = ANY(CAST(:ids AS uuid[])) ORDER BY card_id FOR UPDATE"
            ),
            {"ids": list(card_ids)},
        )
        return {row[0]: CardRecord(*row) for row in rows}, new

    async def save_cards(self, cards: Sequence[CardRecord]) -> None:
        if not cards:
            return
        assignments = ", ".join(f"{c} = :{c}" for c in _CARD_COLUMNS if c != "card_id")
        await self._conn.execute(
            text(f"UPDATE {self._s}.cards SET {assignments} WHERE card_id = :card_id"),
            [asdict(card) for card in cards],
        )

    async def batch_cards(self, batch_id: UUID) -> list[CardRecord]:
        rows = await self._conn.execute(
            text(f"SELECT {', '.join(_CARD_COLUMNS)} FROM {self._s}.cards WHERE batch_id = :b"),
            {"b": batch_id},
        )
        return [CardRecord(*row) for row in rows]


def _detail(report: Reconciliation) -> dict[str, Any]:
    return {
        "missing": {stage: [str(c) for c in ids] for stage, ids in report.missing.items()},
        "problems": list(report.problems),
        "counts": report.counts,
    }


def _batch_row(row: Any) -> BatchRow:
    return BatchRow(
        facts=BatchFacts(
            batch_id=row["batch_id"],
            issuer_id=row["issuer_id"],
            card_count=row["card_count"],
            stock_issued=row["stock_issued"],
            stock_returned=row["stock_returned"],
        ),
        status=row["status"],
        cards_known=row["cards_known"],
        cards_ended=row["cards_ended"],
        cards_settled=row["cards_settled"],
        discrepancy_digest=row["discrepancy_digest"],
        record={
            **row,
            "counts": json_value(row["counts"]),
            "discrepancy": json_value(row["discrepancy"]),
        },
    )
