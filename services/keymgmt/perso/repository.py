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
