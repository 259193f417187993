"""What every keymgmt repository shares: the connection of the unit of work, and small row
helpers. Repositories never commit: the entrypoint's unit of work does."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


class SqlRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def _one(self, sql: str, **params: Any) -> dict[str, Any] | None:
        row = (await self.conn.execute(text(sql), params)).mappings().first()
        return None if row is None else dict(row)

    async def _all(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in (await self.conn.execute(text(sql), params)).mappings()]
