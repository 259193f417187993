"""keymgmt's SQL for product profiles, card PINs and card verification values."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.keymgmt.security import ProductProfile

_PROFILE_COLUMNS = tuple(ProductProfile.model_fields)


class SecurityRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def product(self, issuer_id: str, product_id: str) -> ProductProfile | None:
        row = (
            (
                await self.conn.execute(
                    text(
                        f"SELECT {', '.join(_PROFILE_COLUMNS)} FROM card_products"
                        " WHERE issuer_id = :i AND product_id = :p"
                    ),
                    {"i": issuer_id, "p": product_id},
                )
            )
            .mappings()
            .first()
        )
        return None if row is None else ProductProfile.model_validate(dict(row))

    async def put_product(
        self, issuer_id: str, product_id: str, profile: ProductProfile, who: str
    ) -> None:
        cols = ", ".join(_PROFILE_COLUMNS)
        values = ", ".join(f":{c}" for c in _PROFILE_COLUMNS)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _PROFILE_COLUMNS)
        params = profile.model_dump(mode="json") | {"i": issuer_id, "p": product_id, "w": who}
        await self.conn.execute(
            text(
                f"INSERT INTO card_products (issuer_id, product_id, {cols}, updated_by)"
                f" VALUES (:i, :p, {values}, :w) ON CONFLICT (issuer_id, product_id) DO UPDATE"
                f" SET {updates}, updated_by = EXCLUDED.updated_by, updated_at = now()"
            ),
            params,
        )

    async def add_card_security(self, rows: dict[str, Any]) -> None:
        if "pin" in rows:
            await self.conn.execute(
                text(
                    "INSERT INTO card_pins (card_id, issuer_id, iso0_block, iso0_key_label,"
                    " iso4_block, iso4_key_label, pvki, pvv, ibm_offset) VALUES (:card_id,"
                    " :issuer_id, :iso0_block, :iso0_key_label, :iso4_block, :iso4_key_label,"
                    " :pvki, :pvv, :ibm_offset) ON CONFLICT (card_id) DO NOTHING"
                ),
                rows["pin"],
            )
        if "cvv" in rows:
            await self.conn.execute(
                text(
                    "INSERT INTO card_verification_values (card_id, issuer_id, cvk_a_label,"
                    " cvk_b_label, sealed) VALUES (:card_id, :issuer_id, :cvk_a_label,"
                    " :cvk_b_label, :sealed) ON CONFLICT (card_id) DO NOTHING"
                ),
                rows["cvv"],
            )

    async def card_pin(self, card_id: UUID) -> dict[str, Any] | None:
        row = (
            (
                await self.conn.execute(
                    text("SELECT * FROM card_pins WHERE card_id = :c"), {"c": card_id}
                )
            )
            .mappings()
            .first()
        )
        return None if row is None else dict(row)

    async def card_values(self, card_id: UUID) -> dict[str, Any] | None:
        row = (
            (
                await self.conn.execute(
                    text("SELECT * FROM card_verification_values WHERE card_id = :c"),
                    {"c": card_id},
                )
            )
            .mappings()
            .first()
        )
        return None if row is None else dict(row)
