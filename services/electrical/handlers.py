"""Event handlers of the station agent: card.prepared -> a queued card; card.cancelled -> the
card leaves the queue (or never joins it); batch.assigned -> the stations that may claim the
batch's cards (station planning, keymgmt's)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from services.electrical.repository import StationRepository
from services.electrical.station import StationAgent
from shared.events import BatchAssigned, CardCancelled, CardPrepared
from shared.handlers import HandlerSpec
from shared.outbox import UnitOfWork

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ElectricalDeps:
    """What the station's handlers and readiness are given (built once by app.bootstrap)."""

    agent: StationAgent


async def queue_prepared_card(
    uow: UnitOfWork[StationRepository], event: CardPrepared, deps: ElectricalDeps
) -> None:
    """Idempotent twice over: the inbox drops a redelivered event, and a card already known
    (a second card.prepared for it) is not queued again, whatever its state."""
    queued = await uow.repo.enqueue(
        event.card_id,
        event.batch_id,
        event.issuer_id,
        event.product_id,
        event.event_id,
        event.trace.traceparent if event.trace else None,
    )
    if not queued:
        log.warning(
            "card already known to the station; not queued again",
            extra={"card_id": str(event.card_id)},
        )
    deps.agent.notify_queued()


async def drop_cancelled_card(
    uow: UnitOfWork[StationRepository], event: CardCancelled, deps: ElectricalDeps
) -> None:
    outcome = await uow.repo.cancel(event.card_id, event.batch_id, event.reason, event.event_id)
    ids = {"card_id": str(event.card_id), "state": outcome}
    if outcome in ("cancelled", "remembered"):
        log.info("cancelled card will not be personalised", extra=ids)
    else:
        log.warning("card cancelled too late: already at or past a reader", extra=ids)


async def note_assignment(
    uow: UnitOfWork[StationRepository], event: BatchAssigned, deps: ElectricalDeps
) -> None:
    """keymgmt's assignment of a batch to stations, the newest kept (an older one arriving late
    changes nothing); this station's readers wake when it names this station."""
    newer = await uow.repo.assign(event.batch_id, list(event.stations), event.revision)
    here = deps.agent.station_id in event.stations
    ids = {"batch_id": str(event.batch_id), "stations": event.stations, "here": here}
    if not newer:
        log.info("older batch assignment ignored", extra={**ids, "revision": event.revision})
        return
    log.info("batch assigned", extra=ids)
    if here:
        deps.agent.notify_queued()


HANDLERS: HandlerSpec[ElectricalDeps] = {
    CardPrepared: [queue_prepared_card],
    BatchAssigned: [note_assignment],
    CardCancelled: [drop_cancelled_card],
}
