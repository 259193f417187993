"""Event handlers of the station agent: card.prepared -> a queued card; card.cancelled -> the
card leaves the queue (or never joins it)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from services.electrical.repository import StationRepository
from shared.bus import HandlerTable
from shared.events import CardCancelled, CardPrepared
from shared.outbox import UnitOfWork

log = logging.getLogger(__name__)


def build_handlers(on_queued: Callable[[], None] = lambda: None) -> HandlerTable:
    async def queue_prepared_card(uow: UnitOfWork[Any], event: CardPrepared) -> None:
        """Idempotent twice over: the inbox drops a redelivered event, and a card already
        known (a second card.prepared for it) is not queued again, whatever its state."""
        repo = StationRepository(uow.conn, uow.schema)
        queued = await repo.enqueue(
            event.card_id, event.batch_id, event.issuer_id, event.product_id, event.event_id
        )
        if not queued:
            log.warning(
                "card already known to the station; not queued again",
                extra={"card_id": str(event.card_id)},
            )
        on_queued()

    async def drop_cancelled_card(uow: UnitOfWork[Any], event: CardCancelled) -> None:
        repo = StationRepository(uow.conn, uow.schema)
        outcome = await repo.cancel(event.card_id, event.batch_id, event.reason, event.event_id)
        ids = {"card_id": str(event.card_id), "state": outcome}
        if outcome in ("cancelled", "remembered"):
            log.info("cancelled card will not be personalised", extra=ids)
        else:
            log.warning("card cancelled too late: already at or past a reader", extra=ids)

    return {CardPrepared: [queue_prepared_card], CardCancelled: [drop_cancelled_card]}
