"""keymgmt's SQL for personalisation: a prepared card locked for its script, chip bindings and
perso sessions."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import text

from services.keymgmt.sql import SqlRepository


class PersoRepository(SqlRepository):
    async def prepared(self, card_id: UUID, *, for_update: bool = False) -> dict[str, Any] | None:
        lock = " FOR UPDATE" if for_update else ""
        return await self._one(f"SELECT * FROM prepared_cards WHERE card_id = :c{lock}", c=card_id)

    async def is_cancelled(self, card_id: UUID) -> bool:
        return (
            await self._one("SELECT 1 FROM cancelled_cards WHERE card_id = :c", c=card_id)
            is not None
        )

    async def binding(self, card_id: UUID) -> dict[str, Any] | None:
        return await self._one("SELECT * FROM chip_bindings WHERE card_id = :c", c=card_id)

    async def card_of_chip(self, chip_serial: str) -> UUID | None:
        row = await self._one(
            "SELECT card_id FROM chip_bindings WHERE chip_serial = :s", s=chip_serial
        )
        return None if row is None else UUID(str(row["card_id"]))

    async def bind_chip(self, card_id: UUID, chip_serial: str, station: str) -> None:
        await self.conn.execute(
            text("INSERT INTO chip_bindings (card_id, chip_serial, station) VALUES (:c, :s, :st)"),
            {"c": card_id, "s": chip_serial, "st": station},
        )
        await self.conn.execute(
            text("UPDATE prepared_cards SET state = 'bound' WHERE card_id = :c"), {"c": card_id}
        )

    async def add_perso_session(self, session: dict[str, Any]) -> None:
        await self.conn.execute(
            text(
                "INSERT INTO perso_sessions (card_id, chip_serial, station, apdu_count, kdek_kcv)"
                " VALUES (:card_id, :chip_serial, :station, :apdu_count, :kdek_kcv)"
            ),
            session,
        )

    # -- station planning (perso/stations.py, planning.py) ---------------------------------------
    async def batch_of(self, card_id: UUID) -> UUID | None:
        row = await self._one("SELECT batch_id FROM prepared_cards WHERE card_id = :c", c=card_id)
        return None if row is None else UUID(str(row["batch_id"]))

    async def assignment(self, batch_id: UUID, *, for_share: bool = False) -> dict[str, Any] | None:
        """The batch's stations; FOR SHARE waits for a reassignment being written."""
        lock = " FOR SHARE" if for_share else ""
        return await self._one(f"SELECT * FROM perso_batches WHERE batch_id = :b{lock}", b=batch_id)

    async def assign_new(
        self, batch_ids: list[UUID], stations: list[str], by: str
    ) -> list[dict[str, Any]]:
        """Assign each batch with prepared cards and no assignment yet (revision 1); the rows
        written (a batch assigned before, by anyone, keeps its assignment)."""
        rows = await self.conn.execute(
            text(
                "INSERT INTO perso_batches (batch_id, issuer_id, stations, revision, assigned_by)"
                " SELECT DISTINCT ON (batch_id) batch_id, issuer_id, :st, 1, :by"
                " FROM prepared_cards WHERE batch_id = ANY(:b) ORDER BY batch_id"
                " ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id, issuer_id, revision"
            ),
            {"b": batch_ids, "st": stations, "by": by},
        )
        return [dict(row._mapping) for row in rows]

    async def batch_issuer(self, batch_id: UUID) -> str | None:
        row = await self._one(
            "SELECT issuer_id FROM prepared_cards WHERE batch_id = :b LIMIT 1", b=batch_id
        )
        return None if row is None else str(row["issuer_id"])

    async def reassign(self, batch_id: UUID, issuer_id: str, stations: list[str], by: str) -> int:
        """The planner's assignment replaces the batch's (and ends a pre-planning batch's any
        station rule); the new revision."""
        row = await self.conn.execute(
            text(
                "INSERT INTO perso_batches (batch_id, issuer_id, stations, revision, assigned_by)"
                " VALUES (:b, :i, :st, 1, :by) ON CONFLICT (batch_id) DO UPDATE SET"
                " stations = EXCLUDED.stations, any_station = false,"
                " revision = perso_batches.revision + 1, assigned_by = EXCLUDED.assigned_by,"
                " assigned_at = now() RETURNING revision"
            ),
            {"b": batch_id, "i": issuer_id, "st": stations, "by": by},
        )
        return int(row.scalar_one())

    async def bound_by_station(self, batch_id: UUID) -> dict[str, int]:
        """How many of the batch's cards are bound at each station (they stay there)."""
        rows = await self.conn.execute(
            text(
                "SELECT b.station, count(*) FROM chip_bindings b"
                " JOIN prepared_cards p USING (card_id) WHERE p.batch_id = :b GROUP BY b.station"
            ),
            {"b": batch_id},
        )
        return {str(station): int(n) for station, n in rows}
