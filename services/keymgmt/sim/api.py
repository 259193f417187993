"""SIM endpoints: the operator's OP and ranges (products), batches of SIMs whose Ki is made in
the HSM, the operator's output file (Ki and OPc wrapped under its transport key), and SIM QA
(a USIM challenged as the operator's network would, qa.py)."""

from __future__ import annotations

import logging
import uuid
from typing import Any
from uuid import UUID

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from services.keymgmt.deps import Conductor, KeymgmtDepsDep, KeyReader, Qa, who_of
from services.keymgmt.hsm.kcv import KcvMethod
from services.keymgmt.hsm.session import BureauKeyKind, HsmError, key_label
from services.keymgmt.keys.repository import key_row
from services.keymgmt.keys.service import ensure_generated_key
from services.keymgmt.repository import KeymgmtRepository
from services.keymgmt.sim.credentials import make_batch_credentials, pin1_of
from services.keymgmt.sim.profile import profile_json, profile_of, profile_problem
from services.keymgmt.sim.qa import (
    check_answer,
    milenage_challenge,
    milenage_vectors,
    parse_authenticate,
)
from services.keymgmt.sim.schemas import (
    NoSuchBatch,
    NoSuchSimProduct,
    NotASim,
    SimBatchIn,
    SimChallengeRequest,
    SimCheckRequest,
    SimProductIn,
    SimProductInvalid,
    SimRefused,
    TransportKeyExchange,
)
from services.keymgmt.sim.service import (
    batch_cards,
    check_ranges,
    make_batch,
    op_context,
    output_file,
    range_problems,
    transport_key_problem,
)
from services.keymgmt.sim.transport import (
    MECHANISM_NAME,
    exchange_transport_key,
    operator_public_key,
)
from services.keymgmt.vault.crypto import seal_bytes
from shared.service import RuntimeDep

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/sim")


async def _transport_key(repo: KeymgmtRepository, label: str, issuer_id: str) -> dict[str, Any]:
    row = await repo.keys.key(label)
    problem = transport_key_problem(row, label, issuer_id)
    if problem is not None or row is None:
        raise SimRefused(problem or f"{label} is not in the inventory")
    return row


@router.put(
    "/products/{issuer_id}/{product_id}", tags=["sim"], summary="A SIM product: OP, key, ranges"
)
async def put_sim_product(
    issuer_id: str,
    product_id: str,
    body: SimProductIn,
    who: Conductor,
    runtime: RuntimeDep,
    deps: KeymgmtDepsDep,
) -> Any:
    try:
        check_ranges(issuer_id, body)
    except ValueError as exc:
        raise SimProductInvalid(str(exc)) from exc
    problem = profile_problem(body.profile, body.imsi_prefix)
    if problem is not None:
        raise SimProductInvalid(f"profile: {problem}")
    hsm = deps.hsm()
    async with runtime.unit_of_work() as uow:
        await _transport_key(uow.repo, body.transport_key_label, issuer_id)
        existing = await uow.repo.sim.product(issuer_id, product_id)
        others = await uow.repo.sim.other_products(issuer_id, product_id)
        problem = range_problems(body, existing, others)
        if problem is not None:
            raise SimRefused(problem)
        vault, context = deps.settings.vault_key_label, op_context(issuer_id, product_id)
        sealed = await hsm.call(seal_bytes, vault, bytes.fromhex(body.op), context)
        fields = body.model_dump(exclude={"op"})
        await uow.repo.sim.put_product(
            fields
            | {"issuer_id": issuer_id, "product_id": product_id, "op_sealed": sealed}
            | {"updated_by": who_of(who), "profile": profile_json(body.profile)}
        )
    return {"issuer_id": issuer_id, "product_id": product_id, **fields}


@router.post(
    "/batches", tags=["sim"], summary="Make a batch of SIMs: Ki in the HSM, ICCID/IMSI from range"
)
async def create_batch(
    body: SimBatchIn, who: Conductor, runtime: RuntimeDep, deps: KeymgmtDepsDep
) -> Any:
    hsm, storage = deps.hsm(), deps.settings.sim_kek_label
    async with runtime.unit_of_work() as uow:
        product = await uow.repo.sim.product(body.issuer_id, body.product_id)
        if product is None:
            raise NoSuchSimProduct("no such SIM product")
        transport = product["transport_key_label"]
        tkey = await _transport_key(uow.repo, transport, body.issuer_id)
        try:
            await ensure_generated_key(
                uow.repo.keys, hsm, storage, BureauKeyKind.SIM_KEK_AES256, "keymgmt"
            )
        except HsmError as exc:
            raise SimRefused(f"SIM storage key: {exc}") from exc
        first = await uow.repo.sim.take_serials(body.issuer_id, body.product_id, body.count)
        if first is None:
            raise SimRefused("the product's ICCID/IMSI range is exhausted")
        context = op_context(body.issuer_id, body.product_id)
        secrets = await hsm.call(
            make_batch, bytes(product["op_sealed"]), context, storage, transport, body.count
        )
        profile = profile_of(product)
        credentials = await hsm.call(
            make_batch_credentials,
            storage,
            transport,
            body.count,
            profile.pin1_enabled,
            profile.ota,
        )
        batch_id = uuid.uuid4()
        common = {"batch_id": batch_id, "issuer_id": body.issuer_id, "product_id": body.product_id}
        cards = batch_cards(common, product, first, storage, secrets, credentials)
        batch = common | {
            "count": body.count,
            "first_iccid": cards[0]["iccid"],
            "last_iccid": cards[-1]["iccid"],
            "transport_key_label": transport,
            "transport_kcv": f"{tkey['kcv']} ({tkey['kcv_method']})",
            "created_by": who_of(who),
            "profile": profile_json(profile),
        }
        await uow.repo.sim.add_batch(batch, cards)
    log.info("SIM batch made", extra={"batch_id": str(batch_id), "count": body.count})
    return {k: str(v) if isinstance(v, UUID) else v for k, v in batch.items()}


@router.get("/batches/{batch_id}/output-file", tags=["sim"], response_class=PlainTextResponse)
async def get_output_file(batch_id: UUID, who: KeyReader, runtime: RuntimeDep) -> str:
    """The operator's output file (docs/sim.md): every SIM's secrets wrapped under its
    transport key. An operator sees only its own batches (another's answers 404, as if it did
    not exist); every fetch is recorded with who made it."""
    async with runtime.unit_of_work() as uow:
        batch = await uow.repo.sim.batch(batch_id)
        if batch is None or (who.role == "issuer" and who.issuer_id != batch["issuer_id"]):
            raise NoSuchBatch("no such batch of this operator")
        cards = await uow.repo.sim.batch_cards(batch_id)
        await uow.repo.sim.record_fetch(batch_id, who_of(who), len(cards))
    log.info("SIM output file fetched", extra={"batch_id": str(batch_id), "by": who_of(who)})
    return output_file(batch_id, batch, cards)


@router.post(
    "/transport-keys/{issuer_id}",
    tags=["sim"],
    summary="An operator's transport key, generated in the HSM and sent under its RSA key",
)
async def exchange_transport_key_endpoint(
    issuer_id: str,
    body: TransportKeyExchange,
    who: Conductor,
    runtime: RuntimeDep,
    deps: KeymgmtDepsDep,
) -> Any:
    try:
        label = key_label(issuer_id, "TRANSPORT", body.version)
        modulus, exponent = operator_public_key(body.public_key_pem)
    except ValueError as exc:
        raise SimProductInvalid(str(exc)) from exc
    async with runtime.unit_of_work() as uow:
        await uow.repo.keys.lock(f"keymgmt.generate.{label}")
        if await uow.repo.keys.key(label) is not None:
            raise SimRefused(f"{label} already exists")
        try:
            info, wrapped = await deps.hsm().call(exchange_transport_key, label, modulus, exponent)
        except HsmError as exc:
            raise SimRefused(str(exc)) from exc
        # The X9.24-1:2017 CMAC KCV first: the one the operator is told and its file names.
        ordered = sorted(info.kcvs, key=lambda k: k.method != KcvMethod.AES_CMAC)
        kcvs = [(k.value, k.method.value) for k in ordered]
        key_type = f"{info.key_type}-{info.bits}"
        row = key_row(label, issuer_id, key_type, "wrap", kcvs, "exchanged", (who_of(who),))
        await uow.repo.keys.add_key(row)
    cmac = next(k for k in info.kcvs if k.method == KcvMethod.AES_CMAC)
    log.info("SIM transport key exchanged", extra={"label": label})
    return {
        "label": label,
        "kcv": cmac.value,
        "kcv_method": cmac.method.value,
        "wrapped_key": wrapped.hex().upper(),
        "mechanism": MECHANISM_NAME,
    }


# -- SIM QA -------------------------------------------------------------------------------------
async def _sim_of(runtime: RuntimeDep, card_id: UUID, sqn: bool) -> tuple[dict[str, Any], bytes]:
    async with runtime.unit_of_work() as uow:
        sim = await uow.repo.sim.card(card_id)
        if sim is None:
            raise NotASim(f"card {card_id} is not a prepared SIM")
        product = await uow.repo.sim.product(sim["issuer_id"], sim["product_id"])
        if product is None:
            raise SimRefused("the card's SIM product is gone")
        sim["pin1_enabled"] = profile_of(product).pin1_enabled
        if sqn:
            sim["qa_sqn"] = await uow.repo.sim.next_qa_sqn(card_id)
        await uow.repo.vault.record_access([(card_id, "service:qa", "sim-qa")])
    return sim, bytes(product["op_sealed"])


@router.post("/qa/challenge", tags=["qa"], summary="RAND and AUTN for a SIM's AUTHENTICATE at QA")
async def sim_challenge(
    body: SimChallengeRequest, who: Qa, runtime: RuntimeDep, deps: KeymgmtDepsDep
) -> Any:
    sim, op_sealed = await _sim_of(runtime, body.card_id, sqn=True)
    hsm = deps.hsm()
    context = op_context(sim["issuer_id"], sim["product_id"])
    rand, autn = await hsm.call(milenage_challenge, sim, op_sealed, context, sim["qa_sqn"])
    pin1 = None
    if sim.get("pins_stored") is not None and sim["pin1_enabled"]:
        pin1 = await hsm.call(pin1_of, sim["storage_key_label"], bytes(sim["pins_stored"]))
    return {
        "card_id": str(body.card_id),
        "iccid": sim["iccid"],
        "imsi": sim["imsi"],
        "rand": rand.hex().upper(),
        "autn": autn.hex().upper(),
        "pin1": None if pin1 is None else pin1.hex().upper(),
    }


@router.post(
    "/qa/check", tags=["qa"], summary="Check a SIM's AUTHENTICATE answer (RES, CK, IK) in the HSM"
)
async def sim_check(
    body: SimCheckRequest, who: Qa, runtime: RuntimeDep, deps: KeymgmtDepsDep
) -> Any:
    sim, op_sealed = await _sim_of(runtime, body.card_id, sqn=False)
    try:
        answer = parse_authenticate(bytes.fromhex(body.response))
    except ValueError as exc:
        return {"card_id": str(body.card_id), "ok": False, "problems": [str(exc)]}
    hsm = deps.hsm()
    context = op_context(sim["issuer_id"], sim["product_id"])
    rand = bytes.fromhex(body.rand)
    expected = await hsm.call(milenage_vectors, sim, op_sealed, context, rand)
    problems = check_answer(expected, answer)
    if problems:
        log.info("SIM QA check failed", extra={"card_id": str(body.card_id)})
    return {"card_id": str(body.card_id), "ok": not problems, "problems": problems}
