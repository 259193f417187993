"""Vault endpoints: intake stores cardholder records (sealed under the HSM vault key, idempotent
per card_id); graphical reads a card's print data and fulfillment its mailing address. Every
access is recorded (who, card, purpose, when)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any
from uuid import UUID

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from services.keymgmt.deps import (
    Conductor,
    Fulfillment,
    Graphical,
    Intake,
    KeymgmtDepsDep,
    who_of,
)
from services.keymgmt.emv.card_rows import print_cvk
from services.keymgmt.emv.security import print_view
from services.keymgmt.repository import KeymgmtRepository
from services.keymgmt.vault.retention import purge_due
from services.keymgmt.vault.schemas import (
    DuplicateCard,
    NotInVault,
    VaultedWithOtherData,
    VaultForget,
    VaultForgotten,
    VaultStore,
)
from services.keymgmt.vault.service import new_pan_token, open_card, pan_hashes, seal_cards
from shared.auth import Principal
from shared.keymgmt.contract import IssuerId
from shared.limits import body_limit
from shared.service import RuntimeDep

router = APIRouter(prefix="/v1/vault", tags=["vault"])
# The largest store call: a JSON order of intake's largest size, with room for the card ids.
VAULT_STORE_MAX_BYTES = 64 * 1024 * 1024
SEAL_CHUNK = 200  # cards per HSM-worker call: other HSM work interleaves with a big order


@router.post("/cards")
@body_limit(VAULT_STORE_MAX_BYTES)
async def store_cards(
    body: VaultStore, who: Intake, runtime: RuntimeDep, deps: KeymgmtDepsDep
) -> Any:
    """Seal each record under the HSM vault key; idempotent per card_id."""
    ids = [c.card_id for c in body.cards]
    if len(set(ids)) != len(ids):
        raise DuplicateCard("a card_id appears twice")
    hsm, settings = deps.hsm(), deps.settings
    keys = (settings.vault_key_label, settings.pan_hash_key_label, body.issuer_id)
    async with runtime.unit_of_work() as uow:
        repo = uow.repo.vault
        known = await repo.vault_cards(ids)
        fresh = [c for c in body.cards if c.card_id not in known]
        for start in range(0, len(fresh), SEAL_CHUNK):
            sealed = await hsm.call(seal_cards, *keys, fresh[start : start + SEAL_CHUNK])
            await repo.add_vault_cards(
                [
                    asdict(s) | {"issuer_id": body.issuer_id, "pan_token": new_pan_token()}
                    for s in sealed
                ]
            )
        again = [c for c in body.cards if c.card_id in known]
        hashes = await hsm.call(pan_hashes, keys[1], [c.pan for c in again])
        for card, digest in zip(again, hashes, strict=True):
            old = known[card.card_id]
            if old["issuer_id"] != body.issuer_id or bytes(old["pan_hash"]) != digest:
                raise VaultedWithOtherData(f"card {card.card_id} is vaulted with other data")
        await repo.record_access((i, f"service:{who.name}", "store") for i in ids)
        stored = await repo.vault_cards(ids)
    return {
        "cards": [
            {k: str(stored[i][k]) for k in ("card_id", "pan_token", "masked_pan")} for i in ids
        ]
    }


@router.post("/cards/forget")
async def forget_cards(body: VaultForget, who: Intake, runtime: RuntimeDep) -> Any:
    """Delete the records of cards whose order was refused or failed after they were stored;
    each deletion is recorded in the access log (the card id only)."""
    async with runtime.unit_of_work() as uow:
        repo = uow.repo.vault
        deleted, kept = await repo.forget_unprepared(body.issuer_id, body.card_ids)
        await repo.record_access((i, f"service:{who.name}", "forget") for i in deleted)
    return VaultForgotten(forgotten=len(deleted), kept=kept).model_dump(mode="json")


class RetentionPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cardholder_days: int = Field(
        ge=0, le=3650, description="days the PAN, name and address stay after dispatch"
    )


@router.put("/retention/{issuer_id}")
async def set_retention(
    issuer_id: IssuerId, body: RetentionPolicy, who: Conductor, runtime: RuntimeDep
) -> Any:
    """The issuer's retention window for cardholder data after dispatch (custodian, admin)."""
    async with runtime.unit_of_work() as uow:
        await uow.repo.retention.set_policy(issuer_id, body.cardholder_days, who_of(who))
    return {"issuer_id": issuer_id, "cardholder_days": body.cardholder_days}


@router.post("/purge")
async def purge_now(who: Conductor, runtime: RuntimeDep, deps: KeymgmtDepsDep) -> Any:
    """Run the retention purge now (it also runs on its own schedule); what it deleted."""
    done = await purge_due(runtime, deps.settings.cardholder_retention_days, who_of(who))
    return {
        "sensitive_authentication_data": done.sensitive_authentication_data,
        "cardholder_data": done.cardholder_data,
    }


async def vault_row(runtime: RuntimeDep, card_id: UUID, who: Principal, purpose: str) -> Any:
    """The card's vault row; every access is recorded (who, card, purpose, when)."""
    async with runtime.unit_of_work() as uow:
        return await vault_row_in(uow.repo, card_id, who, purpose)


async def vault_row_in(repo: KeymgmtRepository, card_id: UUID, who: Principal, purpose: str) -> Any:
    """vault_row inside the caller's unit of work (its access recorded when that commits)."""
    row = await repo.vault.vault_card(card_id)
    if row is None:
        raise NotInVault("no such card in the vault")
    await repo.vault.record_access([(card_id, who_of(who), purpose)])
    return row


@router.get("/cards/{card_id}/print-data")
async def print_data(
    card_id: UUID, who: Graphical, runtime: RuntimeDep, deps: KeymgmtDepsDep
) -> Any:
    """The face data of a card for graphical; with the CVV2 computed in the HSM now (under
    the CVK pair its values were prepared with, or after their purge its product's pair, so a
    reprint carries it too) when its product has one. Nothing keeps the CVV2: it is in this
    answer only."""
    async with runtime.unit_of_work() as uow:
        row = await vault_row_in(uow.repo, card_id, who, "print-data")
        cvk = await print_cvk(uow.repo, card_id)
    view = await deps.hsm().call(print_view, row, cvk)
    answer = {
        "card_id": str(card_id),
        "issuer_id": row["issuer_id"],
        "cardholder_name": view.card.cardholder_name,
        "masked_pan": row["masked_pan"],
        "expiry": view.card.expiry,
    }
    return answer if view.cvv2 is None else answer | {"cvv2": view.cvv2}


@router.get("/cards/{card_id}/mailing")
async def mailing(
    card_id: UUID, who: Fulfillment, runtime: RuntimeDep, deps: KeymgmtDepsDep
) -> Any:
    card = await deps.hsm().call(open_card, await vault_row(runtime, card_id, who, "mailing"))
    return {
        "card_id": str(card_id),
        "cardholder_name": card.cardholder_name,
        "address": card.address,
    }
