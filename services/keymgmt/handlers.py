"""keymgmt's event handlers: card.ordered -> data preparation -> card.prepared (a run of events
at once), card.cancelled -> never prepared nor scripted."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from services.keymgmt.deps import KeymgmtDeps
from services.keymgmt.emv.preparation import prepare_ordered_cards
from services.keymgmt.repository import KeymgmtRepository
from shared.events import CardCancelled, CardOrdered
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


async def remember_cancelled(
    uow: UnitOfWork[KeymgmtRepository], event: CardCancelled, deps: KeymgmtDeps
) -> None:
    """The issuer cancelled the card: never prepared from now on, and no station gets its
    script (409 card-cancelled); one already prepared stays so, unused."""
    await uow.repo.emv.record_cancelled(event.card_id, event.reason, event.event_id)
    log.info("card cancelled by its issuer", extra={"card_id": str(event.card_id)})


HANDLERS: HandlerSpec[KeymgmtDeps] = {
    CardOrdered: [Batch(prepare_cards)],
    CardCancelled: [remember_cancelled],
}
