"""HTTP API for the issuers' product profiles (PIN and CVV choices) and a card's PIN data.

Custodians and admins set a profile; an issuer principal reads only its own. The PIN
endpoint gives the fulfillment service the encrypted blocks a PIN mailer is printed from:
never a clear PIN, and each access is recorded in vault_access.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Request

from services.keymgmt.handlers import imks_of
from services.keymgmt.hsm import HsmError
from services.keymgmt.repository import KeymgmtRepository
from services.keymgmt.repository_security import SecurityRepository
from services.keymgmt.security import ProductProfile
from shared.auth import Principal, require

router = APIRouter(prefix="/v1", tags=["products"])
Custodian = Annotated[Principal, Depends(require("custodian", "admin"))]
Reader = Annotated[Principal, Depends(require("custodian", "admin", "issuer"))]
Service = Annotated[Principal, Depends(require("service"))]


def _issuer_id(issuer_id: str) -> str:
    try:
        imks_of(issuer_id)  # the id must be able to name keys
    except HsmError as exc:
        raise HTTPException(422, str(exc)) from exc
    return issuer_id


@router.put("/products/{issuer_id}/{product_id}", summary="Set a product's PIN/CVV profile")
async def put_product(
    issuer_id: str, product_id: str, body: ProductProfile, who: Custodian, request: Request
) -> Any:
    runtime = request.app.state.runtime
    async with runtime.engine.begin() as conn:
        repo = SecurityRepository(conn)
        await repo.put_product(_issuer_id(issuer_id), product_id, body, f"{who.role}:{who.name}")
        return await repo.product(issuer_id, product_id)


@router.get("/products/{issuer_id}/{product_id}")
async def get_product(issuer_id: str, product_id: str, who: Reader, request: Request) -> Any:
    if who.role == "issuer" and who.issuer_id != issuer_id:
        raise HTTPException(404, "no such product")
    async with request.app.state.runtime.engine.connect() as conn:
        profile = await SecurityRepository(conn).product(issuer_id, product_id)
    if profile is None:
        raise HTTPException(404, "no such product")
    return profile


@router.get("/cards/{card_id}/pin", summary="Encrypted PIN blocks for the PIN mailer")
async def card_pin(card_id: UUID, who: Service, request: Request) -> Any:
    if who.name != "fulfillment":
        raise HTTPException(403, f"service {who.name!r} may not read PIN data")
    async with request.app.state.runtime.engine.begin() as conn:
        row = await SecurityRepository(conn).card_pin(card_id)
        if row is None:
            raise HTTPException(404, "no PIN for this card")
        await KeymgmtRepository(conn).record_access([(card_id, f"service:{who.name}", "pin")])
    blocks = []
    for fmt, block, label in (
        ("ISO-9564-1-FORMAT-0", row["iso0_block"], row["iso0_key_label"]),
        ("ISO-9564-1-FORMAT-4", row["iso4_block"], row["iso4_key_label"]),
    ):
        if block is not None:
            blocks.append({"format": fmt, "key_label": label, "block": bytes(block).hex().upper()})
    return {"card_id": str(card_id), "issuer_id": row["issuer_id"], "pin_blocks": blocks}
