"""keymgmt's event handlers: card.ordered -> data preparation -> card.prepared (a run of events
at once) and batch.assigned for a batch new to station planning, card.cancelled -> never
prepared nor scripted."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from services.keymgmt.deps import KeymgmtDeps
from services.keymgmt.emv.preparation import prepare_ordered_cards
from services.keymgmt.perso.planning import assign_prepared_batches
from services.keymgmt.repository import KeymgmtRepository
from shared.events import (
    CardCancelled,
    CardDestroyed,
    CardOrdered,
    CardQaPassed,
    ShipmentDispatched,
)
from shared.handlers import Batch, HandlerSpec
from shared.outbox import UnitOfWork

log = logging.getLogger(__name__)


async def prepare_cards(
    uow: UnitOfWork[KeymgmtRepository], ordered: Sequence[CardOrdered], deps: KeymgmtDeps
) -> None:
    """card.ordered -> MK KCVs, PIN and CVVs per the product -> card.prepared, for a fetched run
    of cards at once (one read, HSM work per card, one write)."""
    settings = deps.settings
    await prepare_ordered_cards(
        uow,
        ordered,
        deps.gate.get,
        settings.service_code,
        deps.actor,
        deps.config_cache,
        settings.sim_kek_label,
        settings.kmc_label,
    )
    # Station planning: each batch now prepared goes to the default stations (if any).
    batches = (event.batch_id for event in ordered)
    await assign_prepared_batches(uow, batches, settings.default_stations, deps.actor)


async def remember_cancelled(
    uow: UnitOfWork[KeymgmtRepository], event: CardCancelled, deps: KeymgmtDeps
) -> None:
    """The issuer cancelled the card: never prepared from now on, and no station gets its
    script (409 card-cancelled); one already prepared stays so, unused."""
    await uow.repo.emv.record_cancelled(event.card_id, event.reason, event.event_id)
    log.info("card cancelled by its issuer", extra={"card_id": str(event.card_id)})


async def note_personalized(
    uow: UnitOfWork[KeymgmtRepository], event: CardQaPassed, deps: KeymgmtDeps
) -> None:
    """QA passed: the card is personalized for good; its CVVs and PIN blocks may go once its
    PIN mailer is printed (vault/retention.py)."""
    await uow.repo.retention.note(
        "personalized_at", event.issuer_id, [event.card_id], event.occurred_at
    )


async def note_finished(
    uow: UnitOfWork[KeymgmtRepository], event: CardDestroyed | CardCancelled, deps: KeymgmtDeps
) -> None:
    """Destroyed or cancelled: the card will never be made; nothing of it need be kept."""
    await uow.repo.retention.note(
        "finished_at", event.issuer_id, [event.card_id], event.occurred_at
    )


async def note_dispatched(
    uow: UnitOfWork[KeymgmtRepository], event: ShipmentDispatched, deps: KeymgmtDeps
) -> None:
    """Cards dispatched: the issuer's retention window for their cardholder data starts."""
    if event.kind == "cards":
        await uow.repo.retention.note(
            "dispatched_at", event.issuer_id, event.card_ids, event.occurred_at
        )


HANDLERS: HandlerSpec[KeymgmtDeps] = {
    CardOrdered: [Batch(prepare_cards)],
    CardCancelled: [remember_cancelled, note_finished],
    CardQaPassed: [note_personalized],
    CardDestroyed: [note_finished],
    ShipmentDispatched: [note_dispatched],
}
