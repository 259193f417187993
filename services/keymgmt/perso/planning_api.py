"""The planner's door (station planning, issue 15): PUT /v1/perso/batches/{batch_id}/stations
assigns a batch to encoding stations, off the floor, by an operator's own token; every
assignment is announced as batch.assigned (audit logs it with the operator as actor)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.keymgmt.deps import who_of
from services.keymgmt.perso.planning import reassign_batch
from services.keymgmt.perso.stations import checked_stations
from shared.auth import Principal, require
from shared.events.lifecycle import MAX_BATCH_STATIONS
from shared.service import RuntimeDep

router = APIRouter(prefix="/v1/perso", tags=["perso"])
Planner = Annotated[Principal, Depends(require("operator"))]


class BatchStations(BaseModel):
    """The stations that may personalise the batch's cards no station has bound yet; an empty
    list parks the batch."""

    model_config = ConfigDict(extra="forbid")

    stations: list[str] = Field(max_length=MAX_BATCH_STATIONS)

    @field_validator("stations")
    @classmethod
    def _station_ids(cls, stations: list[str]) -> list[str]:
        return checked_stations(stations, "stations")


@router.put("/batches/{batch_id}/stations")
async def assign_batch(
    batch_id: UUID, body: BatchStations, who: Planner, runtime: RuntimeDep
) -> Any:
    """Reassign the batch; the answer counts its cards already bound per station, which stay
    with their station."""
    async with runtime.unit_of_work() as uow:
        done = await reassign_batch(uow, batch_id, body.stations, who_of(who))
    return {
        "batch_id": str(done.batch_id),
        "stations": done.stations,
        "revision": done.revision,
        "bound_cards": done.bound,
    }
