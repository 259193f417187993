"""The station's door: POST /v1/perso/secure-scripts gives a card's script through its SCP03
(or SCP02) secure channel (docs/perso-protocol.md), from the card's INITIALIZE UPDATE answer:
EXTERNAL AUTHENTICATE and the protected commands. It binds the chip to the card for good once
the card has proved it holds our keys, at the station whose token asked: from then on only that
station gets the card's script (station binding, issue 15; docs/keymgmt.md). A card no station
has bound goes only to a station its batch is assigned to (station planning, planning.py)."""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from fastapi import APIRouter
from sqlalchemy.exc import IntegrityError

from services.keymgmt.deps import KeymgmtDepsDep, Station
from services.keymgmt.emv.card_rows import emv_card_rows
from services.keymgmt.gp.channel import (
    CardCryptogramMismatch,
    InitializeUpdateAnswer,
    SecureChannelError,
    SecuredScript,
)
from services.keymgmt.gp.secure_channel import secure_script
from services.keymgmt.hsm.session import Hsm, HsmError, KeyNotFoundError
from services.keymgmt.perso.schemas import (
    CardAtAnotherStation,
    CardCancelledByIssuer,
    CardCryptogramRefused,
    CardNotForThisStation,
    CardNotVaulted,
    PersoRefused,
    SecureScriptRequest,
    UnusableAnswer,
)
from services.keymgmt.perso.service import (
    PersoTarget,
    ScriptBuilder,
    binding_problem,
    check_unchanged_keys,
    needed_keys,
    other_station,
    target_of,
)
from services.keymgmt.perso.stations import assignment_problem
from services.keymgmt.repository import KeymgmtRepository
from shared.service import RuntimeDep

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/perso", tags=["perso"])


def _answer_of(body: SecureScriptRequest) -> tuple[bytes, str]:
    """The raw INITIALIZE UPDATE answer and the chip serial it names (the station's, checked)."""
    try:
        iu = bytes.fromhex(body.initialize_update_response)
        answer = InitializeUpdateAnswer.parse(iu)
    except SecureChannelError as exc:
        raise UnusableAnswer(str(exc)) from exc
    chip = answer.chip_serial
    if chip != body.chip_serial.upper():
        raise UnusableAnswer(
            f"the INITIALIZE UPDATE answer is from chip {chip}, not {body.chip_serial}"
        )
    return iu, chip


async def _station_refusal(
    repo: KeymgmtRepository, card_id: UUID, station: str
) -> CardAtAnotherStation | CardNotForThisStation | None:
    """Why this station may not have the card's script, or None: the card is bound at another
    station (station binding), or no station has bound it and its batch is not assigned to
    this one (station planning). A card not prepared is _target's to refuse."""
    bound = await repo.perso.binding(card_id)
    holder = other_station(bound, station)
    if holder is not None:
        why = f"the card is bound to a chip at station {holder}; its script is for that station"
        return CardAtAnotherStation(why)
    batch_id = await repo.perso.batch_of(card_id)
    if batch_id is None:
        return None
    problem = assignment_problem(await repo.perso.assignment(batch_id), bound, station)
    return None if problem is None else CardNotForThisStation(problem)


async def _refusal_recorded(
    repo: KeymgmtRepository, card_id: UUID, station: str
) -> CardAtAnotherStation | CardNotForThisStation | None:
    """Station binding and planning (issue 15): a card bound to a chip at one station is
    scripted for that station only; a card no station has bound, only for a station its batch
    is assigned to. The station is the one the caller's token names. A refusal is recorded in
    vault_access, in the caller's unit of work (which then commits without a script), and
    returned for the caller to raise once committed."""
    refusal = await _station_refusal(repo, card_id, station)
    if refusal is not None:
        purpose = f"perso refused: {refusal}"
        await repo.vault.record_access([(card_id, f"station:{station}", purpose)])
    return refusal


async def _target(
    repo: KeymgmtRepository, card_id: UUID, chip: str, kmc: str, station: str
) -> PersoTarget:
    """The card, checked: not cancelled, prepared and vaulted, free to bind at this station,
    keys active."""
    if await repo.perso.is_cancelled(card_id):
        raise CardCancelledByIssuer("the card was cancelled by its issuer")
    prepared = await repo.perso.prepared(card_id, for_update=True)
    vaulted = await repo.vault.vault_card(card_id)
    if prepared is None or vaulted is None:
        error = PersoRefused if vaulted else CardNotVaulted
        raise error("the card is not prepared")
    bound = await repo.perso.binding(card_id)
    if other_station(bound, station) is not None:  # bound meanwhile (the prepared row's lock)
        raise CardAtAnotherStation("the card is bound to a chip at another station")
    if bound is None:  # reassigned meanwhile? (a planner's write holds the row: FOR SHARE)
        assignment = await repo.perso.assignment(prepared["batch_id"], for_share=True)
        problem = assignment_problem(assignment, bound, station)
        if problem is not None:
            raise CardNotForThisStation(problem)
    chip_card = None if bound is not None else await repo.perso.card_of_chip(chip)
    problem = binding_problem(bound, chip, chip_card)
    if problem is not None:
        raise PersoRefused(problem)
    sim = await repo.sim.card(card_id)
    product, emv = None, None
    if sim is not None:
        product = await repo.sim.product(prepared["issuer_id"], prepared["product_id"])
    else:
        emv = await emv_card_rows(repo, card_id, prepared["issuer_id"], prepared["product_id"])
    target = target_of(prepared, vaulted, bound, sim, product, emv)
    needed = needed_keys(target, kmc)
    missing = set(needed) - await repo.keys.active_labels(needed)
    if missing:
        raise PersoRefused(f"keys not active: {', '.join(sorted(missing))}")
    return target


async def _secure(
    hsm: Hsm, kmc: str, challenge: bytes, iu: bytes, builder: ScriptBuilder
) -> SecuredScript | CardCryptogramMismatch:
    try:
        return await hsm.call(secure_script, kmc, challenge, iu, builder)
    except KeyNotFoundError as exc:
        raise PersoRefused(f"key {exc} is not in the HSM") from exc
    except HsmError as exc:  # the card's EMV data is missing or changed since preparation
        raise PersoRefused(str(exc)) from exc
    except CardCryptogramMismatch as exc:
        return exc
    except SecureChannelError as exc:
        raise UnusableAnswer(str(exc)) from exc


async def _record_perso(
    repo: KeymgmtRepository,
    target: PersoTarget,
    card_id: UUID,
    chip: str,
    station: str,
    secured: SecuredScript,
    builder: ScriptBuilder,
) -> None:
    summary = builder.built[0].summary
    check_unchanged_keys(summary, target.prepared)
    try:
        if target.bound is None:
            await repo.perso.bind_chip(card_id, chip, station)
    except IntegrityError as exc:  # a concurrent request bound this chip first
        raise PersoRefused("this chip is already bound to another card") from exc
    await repo.perso.add_perso_session(
        {"card_id": card_id, "chip_serial": chip, "station": station}
        | {"apdu_count": len(secured.apdus), "kdek_kcv": summary.kdek_kcv.value}
    )
    await repo.vault.record_access([(card_id, f"station:{station}", "perso")])


@router.post("/secure-scripts")
async def secure_perso_script(
    body: SecureScriptRequest, who: Station, runtime: RuntimeDep, deps: KeymgmtDepsDep
) -> Any:
    """The card's script through its secure channel; a card that fails the card cryptogram is
    refused with `card-cryptogram-mismatch` (and the refusal is recorded)."""
    iu, chip = _answer_of(body)
    card_id, settings, hsm = body.card_id, deps.settings, deps.hsm()
    async with runtime.unit_of_work() as uow:  # one transaction: refusal or script, recorded
        refusal = await _refusal_recorded(uow.repo, card_id, who.name)
        if refusal is None:
            target = await _target(uow.repo, card_id, chip, settings.kmc_label, who.name)
            builder = ScriptBuilder(target, settings)
            challenge = bytes.fromhex(body.host_challenge)
            secured = await _secure(hsm, settings.kmc_label, challenge, iu, builder)
            if isinstance(secured, SecuredScript):
                await _record_perso(uow.repo, target, card_id, chip, who.name, secured, builder)
            else:
                # Recorded with the refusal; the station spoils the card and ejects the chip.
                purpose = f"perso refused: card cryptogram mismatch (chip {chip})"
                await uow.repo.vault.record_access([(card_id, f"station:{who.name}", purpose)])
    if refusal is not None:
        log.warning(
            "perso refused: card not for this station",
            extra={"card_id": str(card_id), "station": who.name, "why": str(refusal)},
        )
        raise refusal
    if isinstance(secured, CardCryptogramMismatch):
        log.warning(
            "card cryptogram mismatch",
            extra={"card_id": str(card_id), "chip_serial": chip, "station": who.name},
        )
        raise CardCryptogramRefused(str(secured))
    return {
        "card_id": str(card_id),
        "chip_serial": chip,
        "security_level": f"{secured.security_level:02X}",
        "apdus": [a.hex().upper() for a in secured.apdus],
        "dgis": list(builder.built[0].summary.dgis),
    }
