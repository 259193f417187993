"""keymgmt's SQL for SIM products, batches and cards."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import text

from services.keymgmt.sql import SqlRepository


class SimRepository(SqlRepository):
    async def put_product(self, product: dict[str, Any]) -> None:
        """Create or update a SIM product; the serial counter survives an update."""
        await self.conn.execute(
            text(
                "INSERT INTO sim_products (issuer_id, product_id, op_sealed, transport_key_label,"
                " iccid_prefix, iccid_length, imsi_prefix, first_serial, last_serial,"
                " next_serial, updated_by, profile) VALUES (:issuer_id, :product_id, :op_sealed,"
                " :transport_key_label, :iccid_prefix, :iccid_length, :imsi_prefix,"
                " :first_serial, :last_serial, :first_serial, :updated_by,"
                " CAST(:profile AS jsonb)) ON CONFLICT (issuer_id, product_id) DO UPDATE SET"
                " op_sealed = EXCLUDED.op_sealed, transport_key_label ="
                " EXCLUDED.transport_key_label, last_serial = EXCLUDED.last_serial,"
                " updated_by = EXCLUDED.updated_by, profile = EXCLUDED.profile,"
                " updated_at = now()"
            ),
            product,
        )

    async def other_products(self, issuer_id: str, product_id: str) -> list[dict[str, Any]]:
        rows = await self.conn.execute(
            text(
                "SELECT issuer_id, product_id, iccid_prefix, iccid_length, imsi_prefix,"
                " first_serial, last_serial FROM sim_products"
                " WHERE NOT (issuer_id = :i AND product_id = :p)"
            ),
            {"i": issuer_id, "p": product_id},
        )
        return [dict(row) for row in rows.mappings()]

    async def product(self, issuer_id: str, product_id: str) -> dict[str, Any] | None:
        return await self._one(
            "SELECT * FROM sim_products WHERE issuer_id = :i AND product_id = :p",
            i=issuer_id,
            p=product_id,
        )

    async def take_serials(self, issuer_id: str, product_id: str, count: int) -> int | None:
        """Reserve ``count`` serials (row-locked); the first one, or None when exhausted."""
        row = await self._one(
            "UPDATE sim_products SET next_serial = next_serial + :n WHERE issuer_id = :i"
            " AND product_id = :p AND next_serial + :n <= last_serial + 1"
            " RETURNING next_serial - :n AS first",
            i=issuer_id,
            p=product_id,
            n=count,
        )
        return None if row is None else int(row["first"])

    async def add_batch(self, batch: dict[str, Any], cards: Sequence[dict[str, Any]]) -> None:
        await self.conn.execute(
            text(
                "INSERT INTO sim_batches (batch_id, issuer_id, product_id, count, first_iccid,"
                " last_iccid, transport_key_label, transport_kcv, created_by, profile) VALUES"
                " (:batch_id, :issuer_id, :product_id, :count, :first_iccid, :last_iccid,"
                " :transport_key_label, :transport_kcv, :created_by, CAST(:profile AS jsonb))"
            ),
            batch,
        )
        await self.conn.execute(
            text(
                "INSERT INTO sim_cards (iccid, imsi, batch_id, issuer_id, product_id,"
                " storage_key_label, ki_stored, opc_stored, transport_key_label, ki_transport,"
                " opc_transport, pins_stored, pins_transport, ota_stored, ota_transport)"
                " VALUES (:iccid, :imsi, :batch_id, :issuer_id, :product_id,"
                " :storage_key_label, :ki_stored, :opc_stored, :transport_key_label,"
                " :ki_transport, :opc_transport, :pins_stored, :pins_transport, :ota_stored,"
                " :ota_transport)"
            ),
            list(cards),
        )

    async def batch(self, batch_id: UUID) -> dict[str, Any] | None:
        return await self._one("SELECT * FROM sim_batches WHERE batch_id = :b", b=batch_id)

    async def batch_cards(self, batch_id: UUID) -> list[dict[str, Any]]:
        rows = await self.conn.execute(
            text(
                "SELECT iccid, imsi, ki_transport, opc_transport, pins_transport,"
                " ota_transport FROM sim_cards"
                " WHERE batch_id = :b ORDER BY iccid"
            ),
            {"b": batch_id},
        )
        return [dict(r) for r in rows.mappings()]

    async def add_ordered_sims(
        self, batch: dict[str, Any], cards: Sequence[dict[str, Any]], prepared: Sequence[Any]
    ) -> None:
        """SIMs of card.ordered events: their intake batch's row (created, or its count and
        ICCID range widened), one sim_cards row per card, and the prepared_cards rows."""
        await self.conn.execute(
            text(
                "INSERT INTO sim_batches (batch_id, issuer_id, product_id, count, first_iccid,"
                " last_iccid, transport_key_label, transport_kcv, created_by, profile) VALUES"
                " (:batch_id, :issuer_id, :product_id, :count, :first_iccid, :last_iccid,"
                " :transport_key_label, :transport_kcv, :created_by, CAST(:profile AS jsonb))"
                " ON CONFLICT (batch_id) DO UPDATE SET count = sim_batches.count + EXCLUDED.count,"
                " first_iccid = LEAST(sim_batches.first_iccid, EXCLUDED.first_iccid),"
                " last_iccid = GREATEST(sim_batches.last_iccid, EXCLUDED.last_iccid)"
            ),
            batch,
        )
        await self.conn.execute(
            text(
                "INSERT INTO sim_cards (iccid, imsi, batch_id, issuer_id, product_id,"
                " storage_key_label, ki_stored, opc_stored, transport_key_label, ki_transport,"
                " opc_transport, card_id, pins_stored, pins_transport, ota_stored,"
                " ota_transport) VALUES (:iccid, :imsi, :batch_id, :issuer_id,"
                " :product_id, :storage_key_label, :ki_stored, :opc_stored,"
                " :transport_key_label, :ki_transport, :opc_transport, :card_id,"
                " :pins_stored, :pins_transport, :ota_stored, :ota_transport)"
            ),
            list(cards),
        )
        await self.conn.execute(
            text(
                "INSERT INTO prepared_cards (card_id, issuer_id, batch_id, order_id, product_id,"
                " masked_pan, key_scheme, dgis, source_event_id) VALUES (:card_id, :issuer_id,"
                " :batch_id, :order_id, :product_id, :masked_pan, :key_scheme, :dgis,"
                " :source_event_id)"
            ),
            list(prepared),
        )

    async def card(self, card_id: UUID) -> dict[str, Any] | None:
        """The SIM of a card (card.ordered path), or None when the card is not a SIM."""
        return await self._one("SELECT * FROM sim_cards WHERE card_id = :c", c=card_id)

    async def next_qa_sqn(self, card_id: UUID) -> int | None:
        """A fresh SQN for a QA challenge of the card's SIM (each one higher than the last)."""
        row = await self._one(
            "UPDATE sim_cards SET qa_sqn = qa_sqn + 1 WHERE card_id = :c RETURNING qa_sqn",
            c=card_id,
        )
        return None if row is None else int(row["qa_sqn"])

    async def record_fetch(self, batch_id: UUID, who: str, sims: int) -> None:
        await self.conn.execute(
            text("INSERT INTO sim_output_fetches (batch_id, fetched_by, sims) VALUES (:b, :w, :n)"),
            {"b": batch_id, "w": who, "n": sims},
        )

    async def fetches(self, batch_id: UUID) -> list[dict[str, Any]]:
        rows = await self.conn.execute(
            text(
                "SELECT fetched_by, sims, fetched_at FROM sim_output_fetches WHERE batch_id = :b"
                " ORDER BY fetch_id"
            ),
            {"b": batch_id},
        )
        return [dict(r) for r in rows.mappings()]
