"""How a card's outcome is recorded: each state move and the event it emits in one unit of work
(the transactional outbox), retried while the database is away, since a written chip's outcome
must not be lost. Every move is guarded by the state it starts from, so a retry after a commit
whose answer was lost changes nothing and emits nothing twice."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from services.electrical.repository import StationRepository
from services.electrical.service import QueuedCard
from shared.events import CardEncoded, CardSpoiled
from shared.outage import report_failure, report_recovery
from shared.outbox import UnitOfWork
from shared.service import ServiceRuntime

log = logging.getLogger(__name__)

Work = Callable[[UnitOfWork[Any], StationRepository], Awaitable[bool]]

RECOVERY_REASON = (
    "station agent stopped while this card's chip was being written; the chip's state is "
    "unknown, so the card is spoiled rather than encoded a second time"
)


async def in_transaction(runtime: ServiceRuntime, work: Work) -> bool:
    """Run `work` in one unit of work, retried for as long as the database is away: any failure
    shared.outage counts as an outage (a hard stop's "shutting down" and "starting up" arrive
    as a plain DBAPIError), so a written chip's outcome waits for the database, never lost."""
    delay = 0.2
    while True:
        try:
            async with runtime.unit_of_work() as uow:
                done = await work(uow, uow.repo)
        except Exception as exc:
            if not report_failure(exc):  # an outage: logged when it starts, counted after
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        report_recovery()
        return done


def spoiled_event(
    card: QueuedCard, station_id: str, chip_serial: str | None, reason: str, trace: list[str]
) -> CardSpoiled:
    return CardSpoiled(
        issuer_id=card.issuer_id,
        actor=station_id,
        card_id=card.card_id,
        batch_id=card.batch_id,
        stage="electrical",
        reason=reason[:500],
        chip_serial=chip_serial,
        station_id=station_id,
        apdu_trace=trace,
    )


async def record_spoiled(
    runtime: ServiceRuntime,
    station_id: str,
    card: QueuedCard,
    chip_serial: str,
    reason: str,
    trace: list[str],
    *,
    chip_consumed: bool,
) -> bool:
    """A card that never touched its chip names no chip: that chip takes the next card."""
    serial = chip_serial if chip_consumed else None

    async def spoil(uow: UnitOfWork[Any], repo: StationRepository) -> bool:
        if not await repo.mark_spoiled(card.card_id, reason[:500], chip_consumed):
            return False
        await uow.emit(spoiled_event(card, station_id, serial, reason, trace))
        return True

    return await in_transaction(runtime, spoil)


async def record_encoded(
    runtime: ServiceRuntime,
    station_id: str,
    reader: str,
    card: QueuedCard,
    chip_serial: str,
    apdu_count: int,
) -> bool:
    async def encoded(uow: UnitOfWork[Any], repo: StationRepository) -> bool:
        if not await repo.mark_encoded(card.card_id, apdu_count):
            return False
        await uow.emit(
            CardEncoded(
                issuer_id=card.issuer_id,
                actor=station_id,
                card_id=card.card_id,
                batch_id=card.batch_id,
                chip_serial=chip_serial,
                station_id=station_id,
                reader=reader,
                apdu_count=apdu_count,
            )
        )
        return True

    return await in_transaction(runtime, encoded)


async def start_encoding(runtime: ServiceRuntime, card: QueuedCard) -> bool:
    return await in_transaction(runtime, lambda _uow, repo: repo.start_encoding(card.card_id))


async def cancelled_at_reader(runtime: ServiceRuntime, card: QueuedCard) -> bool:
    return await in_transaction(
        runtime, lambda _uow, repo: repo.cancel_assigned(card.card_id, "cancelled by its issuer")
    )


async def release(runtime: ServiceRuntime, card: QueuedCard) -> bool:
    return await in_transaction(runtime, lambda _uow, repo: repo.release(card.card_id))


async def not_for_this_station(runtime: ServiceRuntime, card: QueuedCard, station_id: str) -> bool:
    """keymgmt refused the script: the card's batch is not assigned to this station (station
    planning). The chip was never written: the card goes back to the queue, never spoiled, and
    this station stops claiming the batch until keymgmt assigns it here."""

    async def back(uow: UnitOfWork[Any], repo: StationRepository) -> bool:
        await repo.not_assigned_here(card.batch_id, station_id)
        return await repo.release(card.card_id)

    return await in_transaction(runtime, back)


async def recover_station(runtime: ServiceRuntime, station_id: str) -> tuple[int, int]:
    """Cards a previous run of this station left unfinished: an `assigned` card's chip was
    never written, so it goes back to the queue; an `encoding` card is spoiled. Returns
    (requeued, spoiled). Only one agent may run per station id."""
    counts = [0, 0]

    async def recover(uow: UnitOfWork[Any], repo: StationRepository) -> bool:
        counts[:] = [0, 0]
        for left in await repo.unfinished(station_id):
            ids = {"card_id": str(left.card.card_id), "chip_serial": left.chip_serial}
            if left.state == "assigned":
                await repo.release(left.card.card_id)
                counts[0] += 1
                log.warning("unwritten card back in the queue", extra=ids)
                continue
            await repo.mark_spoiled(left.card.card_id, RECOVERY_REASON, chip_consumed=True)
            await uow.emit(
                spoiled_event(left.card, station_id, left.chip_serial, RECOVERY_REASON, [])
            )
            counts[1] += 1
            log.warning("card left half-written by a stopped agent: spoiled", extra=ids)
        return True

    await in_transaction(runtime, recover)
    return counts[0], counts[1]
