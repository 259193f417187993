"""Event handlers of the QA service: card.printed -> a card queued for QA; card.spoiled by
graphical (never printed whole, never checked) -> whatever the printer kept of it leaves the
spool."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from services.qa.print_check import discard_prints
from services.qa.repository import QaRepository
from services.qa.station import QaStation
from shared.events import CardPrinted, CardSpoiled
from shared.handlers import HandlerSpec
from shared.outbox import UnitOfWork

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QaDeps:
    """What QA's handlers and readiness are given (built once by app.bootstrap)."""

    station: QaStation


async def queue_printed_card(
    uow: UnitOfWork[QaRepository], event: CardPrinted, deps: QaDeps
) -> None:
    """The inbox drops a redelivered event; a card already queued is not queued again."""
    queued = await uow.repo.enqueue(
        event.card_id,
        event.batch_id,
        event.issuer_id,
        event.chip_serial,
        event.image_sha256,
        event.event_id,
        event.trace.traceparent if event.trace else None,
    )
    if not queued:
        log.warning("card already known to QA", extra={"card_id": str(event.card_id)})
    deps.station.notify_queued()


async def discard_spoiled_print(
    uow: UnitOfWork[QaRepository], event: CardSpoiled, deps: QaDeps
) -> None:
    """A face spoiled at the printer (an aborted job) may have left its document in the spool,
    with the CVV2 on it; no QA will read it."""
    if event.stage == "graphical":
        await asyncio.to_thread(discard_prints, deps.station.spool_dir, event.card_id)


HANDLERS: HandlerSpec[QaDeps] = {
    CardPrinted: [queue_printed_card],
    CardSpoiled: [discard_spoiled_print],
}
