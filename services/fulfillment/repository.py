"""All SQL of the fulfillment service."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.fulfillment.service import CardState, Manifest, ManifestItem
from shared.db import checked_identifier
from shared.keymgmt.contract import MailingData


@dataclass(frozen=True)
class CardRow:
    card_id: UUID
    batch_id: UUID
    issuer_id: str
    state: CardState
    reason: str | None


@dataclass(frozen=True)
class StoredManifest:
    json_path: str
    csv_path: str
    manifest_sha256: str
    csv_sha256: str


class FulfillmentRepository:
    def __init__(self, conn: AsyncConnection, schema: str) -> None:
        self._conn = conn
        self._s = checked_identifier(schema)

    async def _run(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        return await self._conn.execute(text(sql.replace("{s}", self._s)), params or {})

    async def lock(self, kind: str, key: UUID) -> None:
        """A transaction-scoped advisory lock: one card, or one batch, at a time. Packing and
        dispatch both lock the batch, so a card packed while audit reconciles its batch is
        either in the shipment or sees the batch reconciled and ships after it."""
        await self._run(
            "SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))",
            {"k": f"{self._s}/{kind}/{key}"},
        )

    async def card_state(self, card_id: UUID) -> CardState | None:
        row = (
            await self._run("SELECT state FROM {s}.cards WHERE card_id = :c", {"c": card_id})
        ).first()
        return None if row is None else cast(CardState, row[0])

    async def pack_card(
        self,
        *,
        batch_id: UUID,
        issuer_id: str,
        chip_serial: str,
        carrier_id: str,
        mailing: MailingData,
    ) -> None:
        await self._run(
            "INSERT INTO {s}.carriers (carrier_id, card_id, batch_id, cardholder_name, address)"
            " VALUES (:carrier, :card, :batch, :name, CAST(:address AS jsonb))",
            {
                "carrier": carrier_id,
                "card": mailing.card_id,
                "batch": batch_id,
                "name": mailing.cardholder_name,
                "address": mailing.address.model_dump_json(),
            },
        )
        await self._run(
            "INSERT INTO {s}.cards (card_id, batch_id, issuer_id, state, chip_serial, carrier_id)"
            " VALUES (:card, :batch, :issuer, 'packed', :chip, :carrier)",
            {
                "card": mailing.card_id,
                "batch": batch_id,
                "issuer": issuer_id,
                "chip": chip_serial,
                "carrier": carrier_id,
            },
        )

    async def await_destruction(
        self,
        *,
        card_id: UUID,
        batch_id: UUID,
        issuer_id: str,
        chip_serial: str | None,
        reason: str,
    ) -> None:
        await self._run(
            "INSERT INTO {s}.cards (card_id, batch_id, issuer_id, state, chip_serial, reason)"
            " VALUES (:card, :batch, :issuer, 'awaiting_destruction', :chip, :reason)"
            " ON CONFLICT (card_id) DO UPDATE SET state = 'awaiting_destruction',"
            " reason = EXCLUDED.reason, chip_serial = coalesce(EXCLUDED.chip_serial,"
            " {s}.cards.chip_serial), updated_at = now()",
            {
                "card": card_id,
                "batch": batch_id,
                "issuer": issuer_id,
                "chip": chip_serial,
                "reason": reason[:500],
            },
        )

    async def cards_for_update(self, card_ids: Sequence[UUID]) -> dict[UUID, CardRow]:
        rows = await self._run(
            "SELECT card_id, batch_id, issuer_id, state, reason FROM {s}.cards"
            " WHERE card_id = ANY(:ids) ORDER BY card_id FOR UPDATE",
            {"ids": list(card_ids)},
        )
        return {row[0]: CardRow(*row) for row in rows}

    async def mark_destroyed(
        self, card_ids: Sequence[UUID], witnesses: Sequence[str], by: str
    ) -> None:
        await self._run(
            "UPDATE {s}.cards SET state = 'destroyed', witnesses = :w, destroyed_by = :by,"
            " updated_at = now() WHERE card_id = ANY(:ids) AND state = 'awaiting_destruction'",
            {"ids": list(card_ids), "w": list(witnesses), "by": by},
        )
        # A destroyed card's PIN mailer never leaves: it is destroyed with the card.
        await self._run(
            "UPDATE {s}.pin_mailers SET state = 'withheld', updated_at = now()"
            " WHERE card_id = ANY(:ids) AND state = 'printed'",
            {"ids": list(card_ids)},
        )
        await self._purge_carriers(card_ids)

    async def add_destruction_request(
        self, request_id: UUID, card_ids: Sequence[UUID], requested_by: str
    ) -> None:
        await self._run(
            "INSERT INTO {s}.destruction_requests (request_id, card_ids, requested_by)"
            " VALUES (:r, :ids, :by)",
            {"r": request_id, "ids": list(card_ids), "by": requested_by},
        )

    async def destruction_request(
        self, request_id: UUID, *, for_update: bool = False
    ) -> dict[str, Any] | None:
        lock = " FOR UPDATE" if for_update else ""
        row = (
            await self._run(
                "SELECT request_id, card_ids, requested_by, requested_at, state, confirmed_by,"
                f" confirmed_at FROM {{s}}.destruction_requests WHERE request_id = :r{lock}",
                {"r": request_id},
            )
        ).first()
        return None if row is None else dict(row._mapping)

    async def confirm_destruction(self, request_id: UUID, confirmed_by: str) -> None:
        await self._run(
            "UPDATE {s}.destruction_requests SET state = 'confirmed', confirmed_by = :by,"
            " confirmed_at = now() WHERE request_id = :r AND state = 'pending'",
            {"r": request_id, "by": confirmed_by},
        )

    async def carriers_of(self, card_ids: Sequence[UUID]) -> list[tuple[UUID, str]]:
        rows = await self._run(
            "SELECT batch_id, carrier_id FROM {s}.carriers WHERE card_id = ANY(:ids)",
            {"ids": list(card_ids)},
        )
        return [(batch_id, carrier_id) for batch_id, carrier_id in rows]

    async def set_carrier_scan(self, card_id: UUID, scanned: str) -> None:
        await self._run(
            "UPDATE {s}.cards SET carrier_scan = :scan WHERE card_id = :c",
            {"c": card_id, "scan": scanned[:200]},
        )

    async def record_pin_mailer(
        self, card_id: UUID, mailer_id: UUID, batch_id: UUID, issuer_id: str, state: str
    ) -> bool:
        """True when this is news (the first time the mailer is recorded)."""
        row = (
            await self._run(
                "INSERT INTO {s}.pin_mailers (card_id, mailer_id, batch_id, issuer_id, state)"
                " VALUES (:c, :m, :b, :i, :st) ON CONFLICT (card_id) DO NOTHING RETURNING card_id",
                {"c": card_id, "m": mailer_id, "b": batch_id, "i": issuer_id, "st": state},
            )
        ).first()
        return row is not None

    async def mailers_to_dispatch(self, card_ids: Sequence[UUID]) -> list[ManifestItem]:
        """The printed mailers of cards that were just dispatched (mailer id as the item)."""
        rows = await self._run(
            "SELECT card_id, mailer_id FROM {s}.pin_mailers WHERE card_id = ANY(:ids)"
            " AND state = 'printed' ORDER BY mailer_id",
            {"ids": list(card_ids)},
        )
        return [ManifestItem(card_id, f"PM-{mailer_id}") for card_id, mailer_id in rows]

    async def record_mailer_dispatch(self, manifest: Manifest, stored: StoredManifest) -> None:
        await self._insert_shipment(manifest, stored)
        await self._run(
            "UPDATE {s}.pin_mailers SET state = 'dispatched', shipment_id = :sid,"
            " updated_at = now() WHERE card_id = ANY(:ids) AND state = 'printed'",
            {"sid": manifest.shipment_id, "ids": manifest.card_ids},
        )

    async def set_batch_status(
        self,
        batch_id: UUID,
        issuer_id: str,
        status: str,
        counts: dict[str, int],
        problems: Sequence[str] = (),
    ) -> None:
        await self._run(
            "INSERT INTO {s}.batches (batch_id, issuer_id, status, counts, problems)"
            " VALUES (:b, :i, :st, CAST(:c AS jsonb), CAST(:p AS jsonb))"
            " ON CONFLICT (batch_id) DO UPDATE SET status = EXCLUDED.status,"
            " counts = EXCLUDED.counts, problems = EXCLUDED.problems, updated_at = now()",
            {
                "b": batch_id,
                "i": issuer_id,
                "st": status,
                "c": json.dumps(counts),
                "p": json.dumps(list(problems)),
            },
        )

    async def batch_status(self, batch_id: UUID) -> str | None:
        row = (
            await self._run("SELECT status FROM {s}.batches WHERE batch_id = :b", {"b": batch_id})
        ).first()
        return None if row is None else str(row[0])

    async def packed_not_dispatched(self, batch_id: UUID, limit: int) -> list[ManifestItem]:
        """Up to `limit` packed cards of the batch not shipped yet, in carrier order (the same
        cards again on a retry: a shipment's id follows from its cards)."""
        rows = await self._run(
            "SELECT card_id, carrier_id FROM {s}.cards WHERE batch_id = :b AND state = 'packed'"
            " ORDER BY carrier_id LIMIT :n",
            {"b": batch_id, "n": limit},
        )
        return [ManifestItem(card_id, carrier_id) for card_id, carrier_id in rows]

    async def record_dispatch(self, manifest: Manifest, stored: StoredManifest) -> None:
        await self._insert_shipment(manifest, stored)
        ids = manifest.card_ids
        await self._run(
            "UPDATE {s}.cards SET state = 'dispatched', shipment_id = :sid, updated_at = now()"
            " WHERE card_id = ANY(:ids) AND state = 'packed'",
            {"sid": manifest.shipment_id, "ids": ids},
        )
        # The address went out on the envelope; the bureau keeps no copy after dispatch.
        await self._purge_carriers(ids)

    async def _insert_shipment(self, manifest: Manifest, stored: StoredManifest) -> None:
        await self._run(
            "INSERT INTO {s}.shipments (shipment_id, batch_id, issuer_id, kind, courier,"
            " card_count, manifest_sha256, csv_sha256, json_path, csv_path)"
            " VALUES (:id, :b, :i, :k, :c, :n, :ms, :cs, :jp, :cp)",
            {
                "id": manifest.shipment_id,
                "b": manifest.batch_id,
                "i": manifest.issuer_id,
                "k": manifest.kind,
                "c": manifest.courier,
                "n": len(manifest.items),
                "ms": stored.manifest_sha256,
                "cs": stored.csv_sha256,
                "jp": stored.json_path,
                "cp": stored.csv_path,
            },
        )

    async def _purge_carriers(self, card_ids: Sequence[UUID]) -> None:
        await self._run(
            "UPDATE {s}.carriers SET cardholder_name = NULL, address = NULL, purged_at = now()"
            " WHERE card_id = ANY(:ids) AND purged_at IS NULL",
            {"ids": list(card_ids)},
        )

    async def batch_view(self, batch_id: UUID) -> dict[str, Any] | None:
        status = await self.batch_status(batch_id)
        rows = (
            await self._run(
                "SELECT card_id, state, issuer_id FROM {s}.cards WHERE batch_id = :b"
                " ORDER BY card_id",
                {"b": batch_id},
            )
        ).all()
        if status is None and not rows:
            return None
        by_state: dict[str, list[str]] = {
            "packed": [],
            "awaiting_destruction": [],
            "destroyed": [],
            "dispatched": [],
        }
        for card_id, state, _ in rows:
            by_state[state].append(str(card_id))
        shipments = (
            await self._run(
                "SELECT shipment_id, kind, courier, card_count, manifest_sha256, created_at"
                " FROM {s}.shipments WHERE batch_id = :b ORDER BY created_at",
                {"b": batch_id},
            )
        ).all()
        return {
            "batch_id": str(batch_id),
            "issuer_id": rows[0][2] if rows else None,
            "release": status or "awaiting reconciliation",
            "counts": {state: len(ids) for state, ids in by_state.items()},
            **by_state,
            "shipments": [
                {
                    "shipment_id": str(s),
                    "kind": k,
                    "courier": c,
                    "cards": n,
                    "manifest_sha256": sha,
                    "created_at": at.isoformat(),
                }
                for s, k, c, n, sha, at in shipments
            ],
        }
