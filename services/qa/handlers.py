"""Event handlers of the QA service: card.printed -> a card queued for QA."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from services.qa.repository import QaRepository
from shared.bus import HandlerTable
from shared.events import CardPrinted
from shared.outbox import UnitOfWork

log = logging.getLogger(__name__)


def build_handlers(on_queued: Callable[[], None] = lambda: None) -> HandlerTable:
    async def queue_printed_card(uow: UnitOfWork[Any], event: CardPrinted) -> None:
        """The inbox drops a redelivered event; a card already queued is not queued again."""
        queued = await QaRepository(uow.conn, uow.schema).enqueue(
            event.card_id,
            event.batch_id,
            event.issuer_id,
            event.chip_serial,
            event.image_sha256,
            event.event_id,
        )
        if not queued:
            log.warning("card already known to QA", extra={"card_id": str(event.card_id)})
        on_queued()

    return {CardPrinted: [queue_printed_card]}
