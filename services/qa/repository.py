"""All SQL of the QA service: the queue of printed cards and their verdicts."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import checked_identifier

_CARD = "card_id, batch_id, issuer_id, chip_serial, image_sha256, attempts, traceparent"


@dataclass(frozen=True)
class QaCard:
    card_id: UUID
    batch_id: UUID
    issuer_id: str
    chip_serial: str
    image_sha256: str
    attempts: int
    traceparent: str | None = None  # the card's trace, from its card.printed


class QaRepository:
    def __init__(self, conn: AsyncConnection, schema: str) -> None:
        self._conn = conn
        self._s = checked_identifier(schema)

    async def enqueue(
        self,
        card_id: UUID,
        batch_id: UUID,
        issuer_id: str,
        chip_serial: str,
        image_sha256: str,
        event_id: UUID,
        traceparent: str | None = None,
    ) -> bool:
        row = (
            await self._conn.execute(
                text(
                    f"INSERT INTO {self._s}.qa_cards (card_id, batch_id, issuer_id, chip_serial,"
                    " image_sha256, source_event_id, traceparent)"
                    " VALUES (:c, :b, :i, :chip, :sha, :e, :t)"
                    " ON CONFLICT (card_id) DO NOTHING RETURNING card_id"
                ),
                {
                    "c": card_id,
                    "b": batch_id,
                    "i": issuer_id,
                    "chip": chip_serial,
                    "sha": image_sha256,
                    "e": event_id,
                    "t": traceparent,
                },
            )
        ).first()
        return row is not None

    async def claim_next(self) -> QaCard | None:
        """The oldest queued card; replicas skip the rows others hold locked."""
        row = (
            await self._conn.execute(
                text(
                    f"UPDATE {self._s}.qa_cards SET state = 'checking', attempts = attempts + 1"
                    f" WHERE card_id = (SELECT card_id FROM {self._s}.qa_cards"
                    " WHERE state = 'queued' ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)"
                    f" RETURNING {_CARD}"
                )
            )
        ).first()
        return None if row is None else QaCard(*row)

    async def has_queued(self) -> bool:
        row = await self._conn.execute(
            text(f"SELECT EXISTS (SELECT 1 FROM {self._s}.qa_cards WHERE state = 'queued')")
        )
        return bool(row.scalar_one())

    async def release(self, card_id: UUID) -> bool:
        return await self._finish(card_id, "queued", [], None)

    async def release_all_checking(self) -> int:
        """At startup: a check a stopped process left open runs again (checks only read)."""
        rows = await self._conn.execute(
            text(
                f"UPDATE {self._s}.qa_cards SET state = 'queued' WHERE state = 'checking'"
                " RETURNING card_id"
            )
        )
        return len(rows.all())

    async def mark_passed(self, card_id: UUID, checks: list[str]) -> bool:
        return await self._finish(card_id, "passed", checks, None)

    async def mark_failed(self, card_id: UUID, checks: list[str], reason: str) -> bool:
        return await self._finish(card_id, "failed", checks, reason)

    async def _finish(self, card_id: UUID, to: str, checks: list[str], reason: str | None) -> bool:
        finished = ", finished_at = now()" if to != "queued" else ""
        row = (
            await self._conn.execute(
                text(
                    f"UPDATE {self._s}.qa_cards SET state = :to, checks = :checks,"
                    f" reason = :reason{finished}"
                    " WHERE card_id = :c AND state = 'checking' RETURNING card_id"
                ),
                {"c": card_id, "to": to, "checks": checks, "reason": reason},
            )
        ).first()
        return row is not None

    async def decided(self, card_ids: list[UUID]) -> set[UUID]:
        """Those of the cards whose verdict is recorded (passed or failed)."""
        rows = await self._conn.execute(
            text(
                f"SELECT card_id FROM {self._s}.qa_cards WHERE card_id = ANY(:ids)"
                " AND state IN ('passed', 'failed')"
            ),
            {"ids": card_ids},
        )
        return {row[0] for row in rows}

    async def states(self) -> dict[str, int]:
        rows = await self._conn.execute(
            text(f"SELECT state, count(*) FROM {self._s}.qa_cards GROUP BY state")
        )
        return {state: int(n) for state, n in rows}
