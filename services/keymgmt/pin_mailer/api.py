"""PIN mailer endpoints (the fulfillment service): print a card's mailer once, read its state."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter

from services.keymgmt.deps import AnyService, KeymgmtDepsDep
from services.keymgmt.pin_mailer.printing import print_mailer
from services.keymgmt.pin_mailer.schemas import (
    NoPinMailer,
    NotFulfillment,
    PinMailerRequest,
    mailer_view,
)
from shared.auth import Principal
from shared.service import RuntimeDep

router = APIRouter(prefix="/v1", tags=["pin mailers"])


def _fulfillment_only(who: Principal) -> None:
    if who.name != "fulfillment":
        raise NotFulfillment(f"service {who.name!r} may not print PIN mailers")


@router.get("/pin-mailers/{card_id}", summary="The state of a card's PIN mailer (no PIN)")
async def get_pin_mailer(card_id: UUID, who: AnyService, runtime: RuntimeDep) -> Any:
    _fulfillment_only(who)
    async with runtime.unit_of_work() as uow:
        row = await uow.repo.pin_mailers.mailer(card_id)
    if row is None:
        raise NoPinMailer("no PIN mailer for this card")
    return mailer_view(row)


@router.post("/pin-mailers", summary="Print the card's PIN mailer on the PIN printer (once)")
async def print_pin_mailer(
    body: PinMailerRequest, who: AnyService, runtime: RuntimeDep, deps: KeymgmtDepsDep
) -> Any:
    """Idempotent per card: answers the mailer's state (`printed`, `spoiled`, or `submitted`
    when the printer has not finished within the wait; ask again)."""
    _fulfillment_only(who)
    row = await print_mailer(runtime.engine, body, who.name, deps.gate, deps.pin_printer)
    return mailer_view(row)
