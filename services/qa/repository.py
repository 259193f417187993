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

    async def claim_next(self, station: str, reader: str) -> QaCard | None:
        """The oldest queued card, now held by `reader` of `station`. Every position of every
        station claims this way: a row another claim holds locked is skipped, not waited for,
        so no two positions ever get one card and none waits on another's transaction."""
        row = (
            await self._conn.execute(
                text(
                    f"UPDATE {self._s}.qa_cards SET state = 'checking', attempts = attempts + 1,"
                    " claimed_by = :station, claimed_reader = :reader"
                    f" WHERE card_id = (SELECT card_id FROM {self._s}.qa_cards"
                    " WHERE state = 'queued' ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)"
                    f" RETURNING {_CARD}"
                ),
                {"station": station, "reader": reader},
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

    async def release_all_checking(self, station: str) -> int:
        """At startup: a check this station left open when it stopped runs again (checks only
        read). Cards other stations hold stay theirs; a claim from before stations were named
        (claimed_by NULL) is released by whichever station starts first."""
        rows = await self._conn.execute(
            text(
                f"UPDATE {self._s}.qa_cards SET state = 'queued' WHERE state = 'checking'"
                " AND (claimed_by = :station OR claimed_by IS NULL) RETURNING card_id"
            ),
            {"station": station},
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
