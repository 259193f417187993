"""Event handlers of the QA service: card.printed -> a card queued for QA."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from services.qa.repository import QaRepository
from services.qa.station import QaStation
from shared.events import CardPrinted
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


HANDLERS: HandlerSpec[QaDeps] = {CardPrinted: [queue_printed_card]}
