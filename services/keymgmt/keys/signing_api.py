"""The audit log's checkpoint signing (issue 6, issue 15): C2SP checkpoints signed with the HSM
key, only when they extend the last one keymgmt signed (signed_log.py), and keymgmt's record."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter

from services.keymgmt.deps import AnyService, KeymgmtDepsDep, SigningKeyReader
from services.keymgmt.keys.schemas import NotAuditService
from services.keymgmt.keys.service import ensure_signing_key, usable_signing_key
from services.keymgmt.keys.signed_log import (
    NothingSigned,
    SignedCheckpoint,
    SignedLogRepository,
    check_extends,
)
from services.keymgmt.keys.signing import ALGORITHM, key_id, pem, sign_digest, signing_settings
from shared.checkpoint_note import (
    NoteSignature,
    SignedNote,
    checkpoint_text,
    ecdsa_vkey,
    note_digest,
    parse_note,
)
from shared.errors import Invalid
from shared.keymgmt.contract import CheckpointToSign
from shared.service import RuntimeDep, ServiceRuntime
from shared.tlog_proofs import MAX_PROOF_HASHES

router = APIRouter(prefix="/v1/signing/audit-checkpoints", tags=["signing"])


async def _signing_key(runtime: ServiceRuntime, deps: Any) -> tuple[str, bytes]:
    hsm, label = deps.hsm(), signing_settings().audit_signing_key_label
    async with runtime.unit_of_work() as uow:
        row = await ensure_signing_key(uow.repo.keys, hsm, label)
    return label, await usable_signing_key(row, hsm, label)


def _answer(note: str, der: bytes) -> dict[str, Any]:
    (line,) = [s for s in parse_note(note).signatures if s.key_id == ecdsa_vkey("k", der).key_id]
    return {
        "key_id": key_id(der),
        "algorithm": ALGORITHM,
        "signature": base64.b64encode(line.signature).decode(),
        "note": note,
    }


@router.post("", summary="Sign an audit checkpoint that extends the last one signed (audit)")
async def sign_checkpoint(
    body: CheckpointToSign, who: AnyService, runtime: RuntimeDep, deps: KeymgmtDepsDep
) -> Any:
    if who.name != "audit":
        raise NotAuditService(f"service {who.name!r} may not sign audit checkpoints")
    origin = signing_settings().log_origin
    if body.origin != origin:
        raise Invalid(f"origin {body.origin!r}: this key signs checkpoints of {origin!r} only")
    if len(body.proof) > MAX_PROOF_HASHES:
        raise Invalid(f"a consistency proof has at most {MAX_PROOF_HASHES} hashes")
    label, der = await _signing_key(runtime, deps)
    root = bytes.fromhex(body.root_hash)
    text = checkpoint_text(origin, body.tree_size, root)
    async with runtime.unit_of_work() as uow:
        record = SignedLogRepository(uow.repo.conn)
        await record.lock(origin)
        check_extends(await record.last(origin), body)
        same = await record.at(origin, body.tree_size)
        if same is not None:  # same size and (checked above) same root: already signed
            return _answer(same.note, der)
        signature = await deps.hsm().call(sign_digest, label, note_digest(text))
        vkey = ecdsa_vkey(origin, der)
        note = SignedNote(text, (NoteSignature(origin, vkey.key_id, signature),)).render()
        signed = SignedCheckpoint(origin, body.tree_size, root, note)
        await record.record(signed, key_id(der), f"service:{who.name}")
    return _answer(note, der)


@router.get("/last", summary="The newest checkpoint keymgmt signed for the origin")
async def last_signed(
    who: SigningKeyReader, runtime: RuntimeDep, origin: str = "cardbureau/audit"
) -> dict[str, Any]:
    async with runtime.unit_of_work() as uow:
        last = await SignedLogRepository(uow.repo.conn).last(origin)
    if last is None:
        raise NothingSigned(f"keymgmt signed no checkpoint of {origin!r} yet")
    return {"origin": origin, "tree_size": last.tree_size, "root_hash": last.root_hash.hex()}


@router.get("/public-key", summary="The checkpoint-verification key (PEM and C2SP vkey)")
async def checkpoint_public_key(
    who: SigningKeyReader, runtime: RuntimeDep, deps: KeymgmtDepsDep
) -> dict[str, Any]:
    label, der = await _signing_key(runtime, deps)
    return {
        "label": label,
        "key_id": key_id(der),
        "algorithm": ALGORITHM,
        "public_key_pem": pem(der),
        "vkey": ecdsa_vkey(signing_settings().log_origin, der).render(),
    }
