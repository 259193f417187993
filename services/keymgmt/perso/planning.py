"""Station planning (issue 15, docs/keymgmt.md "Station planning"): keymgmt, off the floor,
assigns each batch to the encoding stations that may personalise it, and announces every
assignment on its own topic (batch.assigned), which electrical's stations claim by and audit
logs. By default a batch is assigned when its cards are prepared, to the stations of
BUREAU_PERSO_STATIONS (empty: it waits for a planner); a planner (operator) reassigns a batch
with PUT /v1/perso/batches/{batch_id}/stations (planning_api.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

from services.keymgmt.repository import KeymgmtRepository
from shared.errors import NotFound
from shared.events import BatchAssigned
from shared.outbox import UnitOfWork

log = logging.getLogger(__name__)


class BatchNotPrepared(NotFound):
    """keymgmt has prepared no card of this batch: nothing to assign."""


@dataclass(frozen=True)
class Assigned:
    batch_id: UUID
    stations: list[str]
    revision: int
    bound: dict[str, int]  # cards already bound, per station: they stay there


async def assign_prepared_batches(
    uow: UnitOfWork[KeymgmtRepository], batch_ids: Iterable[UUID], stations: list[str], actor: str
) -> None:
    """The default assignment, in the unit of work that prepared the cards: each batch now
    prepared and not assigned before goes to `stations`; none when the setting is empty."""
    if not stations:
        return
    rows = await uow.repo.perso.assign_new(sorted(set(batch_ids)), stations, f"service:{actor}")
    for row in rows:
        await uow.emit(
            BatchAssigned(
                issuer_id=row["issuer_id"],
                actor=actor,
                batch_id=row["batch_id"],
                stations=stations,
                revision=row["revision"],
            )
        )
    if rows:
        log.info("batches assigned", extra={"count": len(rows), "stations": stations})


async def reassign_batch(
    uow: UnitOfWork[KeymgmtRepository], batch_id: UUID, stations: list[str], who: str
) -> Assigned:
    """A planner's assignment (`who` is `operator:<name>`): replaces the batch's stations for
    its cards no station has bound; a bound card stays at its station."""
    repo = uow.repo.perso
    issuer_id = await repo.batch_issuer(batch_id)
    if issuer_id is None:
        raise BatchNotPrepared(f"keymgmt has prepared no card of batch {batch_id}")
    revision = await repo.reassign(batch_id, issuer_id, stations, who)
    await uow.emit(
        BatchAssigned(
            issuer_id=issuer_id, actor=who, batch_id=batch_id, stations=stations, revision=revision
        )
    )
    bound = await repo.bound_by_station(batch_id)
    log.info(
        "batch reassigned",
        extra={"batch_id": str(batch_id), "stations": stations, "by": who, "revision": revision},
    )
    return Assigned(batch_id, stations, revision, bound)
