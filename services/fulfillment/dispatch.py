"""Dispatch: a reconciled batch's packed cards leave in shipments of a bounded size (a courier
consignment), each with its manifest on disk and its shipment.dispatched; the cards' PIN
mailers leave in shipments of their own, never with the cards."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from uuid import UUID

from services.fulfillment.deps import FulfillmentDeps
from services.fulfillment.repository import FulfillmentRepository
from services.fulfillment.service import Manifest, ManifestItem, build_manifest
from shared.events import BatchReconciled, CardQaPassed, ShipmentDispatched
from shared.outbox import UnitOfWork

log = logging.getLogger(__name__)


async def dispatch_packed_cards(
    uow: UnitOfWork[FulfillmentRepository],
    batch_id: UUID,
    issuer_id: str,
    cause: CardQaPassed | BatchReconciled,
    deps: FulfillmentDeps,
) -> None:
    """Ship every packed card of a reconciled batch not shipped yet, in shipments of at most
    `shipment_max_cards` (a 100,000-card batch is 50 consignments, each event and manifest a
    bounded size), all in the caller's transaction."""
    shipments = cards = 0
    while items := await uow.repo.packed_not_dispatched(batch_id, deps.shipment_max_cards):
        await _ship(uow, batch_id, issuer_id, cause, deps, items)
        shipments, cards = shipments + 1, cards + len(items)
    if not shipments:
        log.info("nothing packed to dispatch", extra={"batch_id": str(batch_id)})
        return
    log.info(
        "batch dispatched",
        extra={"batch_id": str(batch_id), "shipments": shipments, "cards": cards},
    )


async def _ship(
    uow: UnitOfWork[FulfillmentRepository],
    batch_id: UUID,
    issuer_id: str,
    cause: CardQaPassed | BatchReconciled,
    deps: FulfillmentDeps,
    items: Sequence[ManifestItem],
) -> None:
    """One shipment of packed cards, and its cards' PIN mailers as a shipment of their own."""
    repo = uow.repo
    manifest = build_manifest(
        batch_id=batch_id,
        issuer_id=issuer_id,
        courier=deps.courier,
        created_at=cause.occurred_at,
        items=items,
    )
    stored = await asyncio.to_thread(deps.manifests.write, manifest)
    await repo.record_dispatch(manifest, stored)
    await uow.emit(shipped(manifest, stored.manifest_sha256, deps.actor))
    for card_batch, carrier_id in await repo.carriers_of(manifest.card_ids):
        await asyncio.to_thread(deps.inserter.discard, card_batch, carrier_id)
    # The PIN mailers of these cards leave too, but never in the cards' shipment.
    mailers = await repo.mailers_to_dispatch(manifest.card_ids)
    if mailers:
        mailer_manifest = build_manifest(
            batch_id=batch_id,
            issuer_id=issuer_id,
            courier=deps.courier,
            created_at=cause.occurred_at,
            items=mailers,
            kind="pin_mailers",
        )
        mailer_stored = await asyncio.to_thread(deps.manifests.write, mailer_manifest)
        await repo.record_mailer_dispatch(mailer_manifest, mailer_stored)
        await uow.emit(shipped(mailer_manifest, mailer_stored.manifest_sha256, deps.actor))
    log.info(
        "shipment dispatched",
        extra={
            "batch_id": str(batch_id),
            "shipment_id": str(manifest.shipment_id),
            "cards": len(items),
        },
    )


def shipped(manifest: Manifest, manifest_sha256: str, actor: str) -> ShipmentDispatched:
    return ShipmentDispatched(
        issuer_id=manifest.issuer_id,
        actor=actor,
        shipment_id=manifest.shipment_id,
        batch_id=manifest.batch_id,
        kind=manifest.kind,
        card_ids=manifest.card_ids,
        courier=manifest.courier,
        manifest_sha256=manifest_sha256,
    )
