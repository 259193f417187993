"""Event handlers of the fulfillment service.

qa_passed -> carrier + card.packed; qa_failed / spoiled -> awaiting destruction;
batch.reconciled -> manifest + shipment.dispatched; batch.discrepancy -> batch held.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from services.fulfillment.keymgmt_client import CardNotInVault, MailingData
from services.fulfillment.manifests import ManifestWriter
from services.fulfillment.repository import FulfillmentRepository
from services.fulfillment.service import (
    build_manifest,
    carrier_id_for,
    state_after_packing,
    state_after_rejection,
)
from shared.bus import HandlerTable, PoisonEvent
from shared.events import (
    BatchDiscrepancy,
    BatchReconciled,
    CardPacked,
    CardQaFailed,
    CardQaPassed,
    CardSpoiled,
    ShipmentDispatched,
)
from shared.outbox import UnitOfWork

log = logging.getLogger(__name__)


class MailingSource(Protocol):
    async def mailing(self, card_id: UUID) -> MailingData: ...


@dataclass(frozen=True)
class FulfillmentDeps:
    keymgmt: MailingSource
    manifests: ManifestWriter
    courier: str
    actor: str = "fulfillment"


def build_handlers(deps: FulfillmentDeps) -> HandlerTable:
    async def pack_card(uow: UnitOfWork, event: CardQaPassed) -> None:
        repo = FulfillmentRepository(uow.conn, uow.schema)
        await repo.lock("card", event.card_id)
        current = await repo.card_state(event.card_id)
        if state_after_packing(current) is None:
            log.warning(
                "qa_passed for a card already handled; not packing it",
                extra={"card_id": str(event.card_id), "state": current},
            )
            return
        try:
            mailing = await deps.keymgmt.mailing(event.card_id)
        except CardNotInVault as exc:
            raise PoisonEvent(str(exc)) from exc
        carrier_id = carrier_id_for(event.card_id)
        await repo.lock("batch", event.batch_id)
        await repo.pack_card(
            batch_id=event.batch_id,
            issuer_id=event.issuer_id,
            chip_serial=event.chip_serial,
            carrier_id=carrier_id,
            mailing=mailing,
        )
        await uow.emit(
            CardPacked(
                issuer_id=event.issuer_id,
                actor=deps.actor,
                card_id=event.card_id,
                batch_id=event.batch_id,
                carrier_id=carrier_id,
            )
        )
        if await repo.batch_status(event.batch_id) == "reconciled":
            # The qa topic ran behind the audit topic: ship this card after its batch.
            log.warning("card packed after its batch was reconciled; shipping it on its own")
            await dispatch_packed_cards(uow, repo, event.batch_id, event.issuer_id, event)

    async def set_aside_qa_reject(uow: UnitOfWork, event: CardQaFailed) -> None:
        await _set_aside(
            uow,
            event.card_id,
            event.batch_id,
            event.issuer_id,
            event.chip_serial,
            f"qa: {event.reason}",
        )

    async def set_aside_spoiled(uow: UnitOfWork, event: CardSpoiled) -> None:
        await _set_aside(
            uow,
            event.card_id,
            event.batch_id,
            event.issuer_id,
            event.chip_serial,
            f"{event.stage}: {event.reason}",
        )

    async def release_batch(uow: UnitOfWork, event: BatchReconciled) -> None:
        repo = FulfillmentRepository(uow.conn, uow.schema)
        await repo.lock("batch", event.batch_id)
        await repo.set_batch_status(event.batch_id, event.issuer_id, "reconciled", event.counts)
        await dispatch_packed_cards(uow, repo, event.batch_id, event.issuer_id, event)

    async def hold_batch(uow: UnitOfWork, event: BatchDiscrepancy) -> None:
        repo = FulfillmentRepository(uow.conn, uow.schema)
        await repo.lock("batch", event.batch_id)
        await repo.set_batch_status(
            event.batch_id, event.issuer_id, "held", event.counts, event.problems
        )
        log.warning(
            "batch held by audit: nothing dispatched", extra={"batch_id": str(event.batch_id)}
        )

    async def dispatch_packed_cards(
        uow: UnitOfWork,
        repo: FulfillmentRepository,
        batch_id: UUID,
        issuer_id: str,
        cause: CardQaPassed | BatchReconciled,
    ) -> None:
        """Ship every packed card of a reconciled batch not shipped yet, as one shipment."""
        items = await repo.packed_not_dispatched(batch_id)
        if not items:
            log.info("nothing packed to dispatch", extra={"batch_id": str(batch_id)})
            return
        manifest = build_manifest(
            batch_id=batch_id,
            issuer_id=issuer_id,
            courier=deps.courier,
            created_at=cause.occurred_at,
            items=items,
        )
        stored = await asyncio.to_thread(deps.manifests.write, manifest)
        await repo.record_dispatch(manifest, stored)
        await uow.emit(
            ShipmentDispatched(
                issuer_id=issuer_id,
                actor=deps.actor,
                shipment_id=manifest.shipment_id,
                batch_id=batch_id,
                kind=manifest.kind,
                card_ids=manifest.card_ids,
                courier=manifest.courier,
                manifest_sha256=stored.manifest_sha256,
            )
        )
        log.info(
            "shipment dispatched",
            extra={
                "batch_id": str(batch_id),
                "shipment_id": str(manifest.shipment_id),
                "cards": len(items),
            },
        )

    return {
        CardQaPassed: [pack_card],
        CardQaFailed: [set_aside_qa_reject],
        CardSpoiled: [set_aside_spoiled],
        BatchReconciled: [release_batch],
        BatchDiscrepancy: [hold_batch],
    }


async def _set_aside(
    uow: UnitOfWork,
    card_id: UUID,
    batch_id: UUID,
    issuer_id: str,
    chip_serial: str | None,
    reason: str,
) -> None:
    """A rejected or spoiled card goes on its batch's list awaiting witnessed destruction."""
    repo = FulfillmentRepository(uow.conn, uow.schema)
    await repo.lock("card", card_id)
    current = await repo.card_state(card_id)
    if state_after_rejection(current) is None:
        log.warning(
            "reject for a card already %s; left as it is",
            current,
            extra={"card_id": str(card_id), "reason": reason},
        )
        return
    await repo.await_destruction(
        card_id=card_id,
        batch_id=batch_id,
        issuer_id=issuer_id,
        chip_serial=chip_serial,
        reason=reason,
    )
    log.info("card awaits destruction", extra={"card_id": str(card_id), "reason": reason})
