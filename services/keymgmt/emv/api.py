"""EMV endpoints: the issuers' product profiles (PIN and CVV choices), a card's encrypted PIN
blocks for fulfillment's PIN mailer, and QA's chip read-back and ARQC checks.

Custodians and admins set a profile; an issuer principal reads only its own. The PIN endpoint
gives the fulfillment service the encrypted blocks: never a clear PIN, and each access is
recorded in vault_access.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter

from services.keymgmt.deps import AnyService, Conductor, KeymgmtDepsDep, KeyReader, Qa, who_of
from services.keymgmt.emv.card_rows import emv_card_rows
from services.keymgmt.emv.readback import readback_verdict, require_in_qa, take_readback
from services.keymgmt.emv.records import aip
from services.keymgmt.emv.schemas import (
    ArqcRequest,
    CannotVerify,
    CardNotInQa,
    NoPin,
    NoSuchProduct,
    NotFulfillment,
    ProductProfile,
    ReadbackRequest,
    UnusableIssuerId,
)
from services.keymgmt.emv.service import expected_records, imks_of, verify_card_arqc
from services.keymgmt.hsm.session import HsmError
from services.keymgmt.vault.api import vault_row_in
from shared.keymgmt.contract import ReadbackProblem
from shared.service import RuntimeDep

router = APIRouter(prefix="/v1")


def _issuer_id(issuer_id: str) -> str:
    try:
        imks_of(issuer_id)  # the id must be able to name keys
    except HsmError as exc:
        raise UnusableIssuerId(str(exc)) from exc
    return issuer_id


@router.put(
    "/products/{issuer_id}/{product_id}",
    tags=["products"],
    summary="Set a product's PIN/CVV profile",
)
async def put_product(
    issuer_id: str, product_id: str, body: ProductProfile, who: Conductor, runtime: RuntimeDep
) -> Any:
    async with runtime.unit_of_work() as uow:
        repo = uow.repo.emv
        await repo.put_product(_issuer_id(issuer_id), product_id, body, who_of(who))
        return await repo.product(issuer_id, product_id)


@router.get("/products/{issuer_id}/{product_id}", tags=["products"])
async def get_product(issuer_id: str, product_id: str, who: KeyReader, runtime: RuntimeDep) -> Any:
    if who.role == "issuer" and who.issuer_id != issuer_id:
        raise NoSuchProduct("no such product")
    async with runtime.unit_of_work() as uow:
        profile = await uow.repo.emv.product(issuer_id, product_id)
    if profile is None:
        raise NoSuchProduct("no such product")
    return profile


@router.get(
    "/cards/{card_id}/pin", tags=["products"], summary="Encrypted PIN blocks for the PIN mailer"
)
async def card_pin(card_id: UUID, who: AnyService, runtime: RuntimeDep) -> Any:
    if who.name != "fulfillment":
        raise NotFulfillment(f"service {who.name!r} may not read PIN data")
    async with runtime.unit_of_work() as uow:
        row = await uow.repo.emv.card_pin(card_id)
        if row is None:
            raise NoPin("no PIN for this card")
        await uow.repo.vault.record_access([(card_id, f"service:{who.name}", "pin")])
    blocks = []
    for fmt, block, label in (
        ("ISO-9564-1-FORMAT-0", row["iso0_block"], row["iso0_key_label"]),
        ("ISO-9564-1-FORMAT-4", row["iso4_block"], row["iso4_key_label"]),
    ):
        if block is not None:
            blocks.append({"format": fmt, "key_label": label, "block": bytes(block).hex().upper()})
    return {"card_id": str(card_id), "issuer_id": row["issuer_id"], "pin_blocks": blocks}


@router.post("/qa/readback", tags=["qa"])
async def readback(
    body: ReadbackRequest, who: Qa, runtime: RuntimeDep, deps: KeymgmtDepsDep
) -> Any:
    """Compare the chip's records with the prepared ones: pass, or fail with reason codes that
    name no field and no value; only for a card in QA on that chip at that QA station, a
    bounded number of times (readback.py)."""
    hsm, settings = deps.hsm(), deps.settings
    async with runtime.unit_of_work() as uow:  # the access is recorded even when refused below
        require_in_qa(await uow.repo.readback.qa_card(body.card_id), body)
        row = await vault_row_in(uow.repo, body.card_id, who, "qa-readback")
        prepared = await uow.repo.perso.prepared(body.card_id)
        rows = None
        if prepared is not None:
            issuer, product = prepared["issuer_id"], prepared["product_id"]
            rows = await emv_card_rows(uow.repo, body.card_id, issuer, product)
    if rows is None:  # the station refuses such a card: it cannot be in QA
        raise CardNotInQa(f"card {body.card_id} was not prepared with an EMV profile")
    try:
        want = await hsm.call(expected_records, row, settings.service_code, rows)
    except HsmError:  # its EMV data changed since preparation: nothing to compare with
        want = None
    async with runtime.unit_of_work() as uow:  # counted (committed) before it is answered
        await take_readback(uow.repo.readback, body)
    if want is None:
        return {"ok": False, "problems": [ReadbackProblem.PROFILE_CHANGED]}
    problems = readback_verdict(want, body.records)
    return {"ok": not problems, "problems": problems}


@router.post("/arqc/verify", tags=["qa"])
async def arqc_verify(body: ArqcRequest, who: Qa, runtime: RuntimeDep, deps: KeymgmtDepsDep) -> Any:
    hsm = deps.hsm()
    async with runtime.unit_of_work() as uow:  # the access is recorded even when refused below
        row = await vault_row_in(uow.repo, body.card_id, who, "arqc-verify")
        prepared = await uow.repo.perso.prepared(body.card_id)
        product = None
        if prepared is not None:
            product = await uow.repo.emv.product(prepared["issuer_id"], prepared["product_id"])
    if product is None or product.emv is None:
        raise CannotVerify(f"cannot verify: card {body.card_id}'s product has no EMV profile")
    try:
        imk_ac = imks_of(row["issuer_id"]).ac
        cdol1, atc, arqc = (bytes.fromhex(x) for x in (body.cdol1, body.atc, body.arqc))
        ok = await hsm.call(verify_card_arqc, row, imk_ac, cdol1, atc, arqc, aip(product.emv))
    except HsmError as exc:  # no such issuer key in the HSM, or an unusable issuer id
        raise CannotVerify(f"cannot verify: {exc}") from exc
    return {"ok": ok}
