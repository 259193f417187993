"""HTTP API for SIM products: the operator's OP and ranges, batches of SIMs whose Ki is made
in the HSM, and the operator's output file (Ki and OPc wrapped under its transport key)."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from services.keymgmt.bureau_keys import ensure_generated_key
from services.keymgmt.hsm import BureauKeyKind, Hsm, HsmError, key_label
from services.keymgmt.repository import KeymgmtRepository
from services.keymgmt.repository_sim import SimRepository
from services.keymgmt.sim import (
    WRAP_NAME,
    SimSecrets,
    generate_sim_secrets,
    iccid_span,
    imsi_span,
    make_iccid,
    make_imsi,
    spans_overlap,
)
from services.keymgmt.vault import open_sealed, seal_bytes
from shared.auth import Principal, require

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/sim", tags=["sim"])
Custodian = Annotated[Principal, Depends(require("custodian", "admin"))]
Reader = Annotated[Principal, Depends(require("custodian", "admin", "issuer"))]
MAX_BATCH = 10_000
ISSUER = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class SimProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    op: str = Field(pattern=r"^[0-9A-Fa-f]{32}$", repr=False, description="OP, write-only")
    transport_key_label: str = Field(description="the operator's transport key (usage wrap)")
    iccid_prefix: str = Field(pattern=r"^89\d{2,14}$")
    iccid_length: int = Field(default=19, ge=18, le=20)
    imsi_prefix: str = Field(pattern=r"^\d{5,6}$", description="MCC || MNC")
    first_serial: int = Field(ge=0)
    last_serial: int = Field(ge=0)


class SimBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    issuer_id: str = Field(pattern=ISSUER)
    product_id: str = Field(min_length=1, max_length=64)
    count: int = Field(ge=1, le=MAX_BATCH)


def op_context(issuer_id: str, product_id: str) -> bytes:
    return f"sim-op|{issuer_id}|{product_id}".encode()


def make_batch(
    hsm: Hsm, op_sealed: bytes, context: bytes, storage: str, transport: str, count: int
) -> list[SimSecrets]:
    """Open OP on the HSM worker, make ``count`` Ki/OPc pairs, zero the OP copy we own."""
    op = bytearray(open_sealed(hsm, op_sealed, context))
    try:
        return generate_sim_secrets(hsm, bytes(op), storage, transport, count)
    finally:
        op[:] = bytes(len(op))


async def _transport_key(repo: KeymgmtRepository, label: str, issuer_id: str) -> dict[str, Any]:
    row = await repo.key(label)
    if row is None or row["state"] != "active" or row["usage"] != "wrap":
        raise HTTPException(409, f"{label} is not an active wrap key in the inventory")
    if row["issuer_id"] not in (issuer_id, "bureau"):
        raise HTTPException(409, f"{label} belongs to another issuer")
    return row


@router.put("/products/{issuer_id}/{product_id}", summary="A SIM product: OP, key, ranges")
async def put_sim_product(
    issuer_id: str, product_id: str, body: SimProductIn, who: Custodian, request: Request
) -> Any:
    runtime = request.app.state.runtime
    try:
        key_label(issuer_id, "SIM")  # the issuer id must be able to name keys
        if body.last_serial < body.first_serial:
            raise ValueError("last_serial is before first_serial")
        make_iccid(body.iccid_prefix, body.last_serial, body.iccid_length)  # the range fits
        make_imsi(body.imsi_prefix, body.last_serial)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    hsm: Hsm = runtime.gate.get()
    vault = runtime.keymgmt_settings.vault_key_label
    async with runtime.engine.begin() as conn:
        await _transport_key(KeymgmtRepository(conn), body.transport_key_label, issuer_id)
        sims = SimRepository(conn)
        existing = await sims.product(issuer_id, product_id)
        fixed = ("iccid_prefix", "iccid_length", "imsi_prefix", "first_serial")
        changed = [f for f in fixed if existing is not None and existing[f] != getattr(body, f)]
        if changed:  # the serial counter runs on: numbers already handed out stay valid
            raise HTTPException(409, f"a SIM product's {', '.join(changed)} cannot change")
        serials = (body.first_serial, body.last_serial)
        iccids = iccid_span(body.iccid_prefix, *serials, body.iccid_length)
        imsis = imsi_span(body.imsi_prefix, *serials)
        for other in await sims.other_products(issuer_id, product_id):
            name = f"{other['issuer_id']}/{other['product_id']}"
            span = (other["iccid_prefix"], other["first_serial"], other["last_serial"])
            if spans_overlap(iccids, iccid_span(*span, other["iccid_length"])):
                raise HTTPException(409, f"the ICCID range overlaps SIM product {name}'s")
            if spans_overlap(imsis, imsi_span(other["imsi_prefix"], *span[1:])):
                raise HTTPException(409, f"the IMSI range overlaps SIM product {name}'s")
        op = bytes.fromhex(body.op)
        sealed = await hsm.call(seal_bytes, vault, op, op_context(issuer_id, product_id))
        fields = body.model_dump(exclude={"op"})
        await sims.put_product(
            fields
            | {"issuer_id": issuer_id, "product_id": product_id, "op_sealed": sealed}
            | {"updated_by": f"{who.role}:{who.name}"}
        )
    return {"issuer_id": issuer_id, "product_id": product_id, **fields}


@router.post("/batches", summary="Make a batch of SIMs: Ki in the HSM, ICCID/IMSI from range")
async def create_batch(body: SimBatchIn, who: Custodian, request: Request) -> Any:
    runtime = request.app.state.runtime
    hsm: Hsm = runtime.gate.get()
    storage = runtime.keymgmt_settings.sim_kek_label
    async with runtime.engine.begin() as conn:
        sims = SimRepository(conn)
        product = await sims.product(body.issuer_id, body.product_id)
        if product is None:
            raise HTTPException(404, "no such SIM product")
        transport = product["transport_key_label"]
        tkey = await _transport_key(KeymgmtRepository(conn), transport, body.issuer_id)
        try:
            await ensure_generated_key(conn, hsm, storage, BureauKeyKind.SIM_KEK_AES256, "keymgmt")
        except HsmError as exc:
            raise HTTPException(409, f"SIM storage key: {exc}") from exc
        first = await sims.take_serials(body.issuer_id, body.product_id, body.count)
        if first is None:
            raise HTTPException(409, "the product's ICCID/IMSI range is exhausted")
        context = op_context(body.issuer_id, body.product_id)
        secrets = await hsm.call(
            make_batch, bytes(product["op_sealed"]), context, storage, transport, body.count
        )
        batch_id = uuid.uuid4()
        ids = [
            (
                make_iccid(product["iccid_prefix"], s, product["iccid_length"]),
                make_imsi(product["imsi_prefix"], s),
            )
            for s in range(first, first + body.count)
        ]
        common = {"batch_id": batch_id, "issuer_id": body.issuer_id, "product_id": body.product_id}
        cards = [
            common
            | {"iccid": iccid, "imsi": imsi, "storage_key_label": storage}
            | {"ki_stored": sec.ki_stored, "opc_stored": sec.opc_stored}
            | {"transport_key_label": transport, "ki_transport": sec.ki_transport}
            | {"opc_transport": sec.opc_transport}
            for (iccid, imsi), sec in zip(ids, secrets, strict=True)
        ]
        batch = common | {
            "count": body.count,
            "first_iccid": ids[0][0],
            "last_iccid": ids[-1][0],
            "transport_key_label": transport,
            "transport_kcv": f"{tkey['kcv']} ({tkey['kcv_method']})",
            "created_by": f"{who.role}:{who.name}",
        }
        await sims.add_batch(batch, cards)
    log.info("SIM batch made", extra={"batch_id": str(batch_id), "count": body.count})
    return {k: str(v) if isinstance(v, UUID) else v for k, v in batch.items()}


@router.get("/batches/{batch_id}/output-file", response_class=PlainTextResponse)
async def output_file(batch_id: UUID, who: Reader, request: Request) -> str:
    """The operator's output file: ICCID, IMSI, Ki and OPc wrapped under its transport key."""
    async with request.app.state.runtime.engine.connect() as conn:
        sims = SimRepository(conn)
        batch = await sims.batch(batch_id)
        if batch is None or (who.role == "issuer" and who.issuer_id != batch["issuer_id"]):
            raise HTTPException(404, "no such batch")
        cards = await sims.batch_cards(batch_id)
    head = [
        "* cardbureau SIM output file",
        f"* issuer: {batch['issuer_id']}  product: {batch['product_id']}  batch: {batch_id}",
        f"* quantity: {batch['count']}",
        f"* Ki, OPc: {WRAP_NAME} under {batch['transport_key_label']},"
        f" KCV {batch['transport_kcv']}",
        "var_out: ICCID/IMSI/KI/OPC",
    ]
    rows = [
        f"{c['iccid']} {c['imsi']} {bytes(c['ki_transport']).hex().upper()}"
        f" {bytes(c['opc_transport']).hex().upper()}"
        for c in cards
    ]
    return "\n".join(head + rows) + "\n"
