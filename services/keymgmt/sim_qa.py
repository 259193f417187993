"""SIM QA in the HSM: keymgmt challenges a personalised USIM as the operator's network would
and checks its AUTHENTICATE answer (3GPP TS 33.102 §6.3, Milenage TS 35.206).

    POST /v1/sim/qa/challenge {card_id}                  -> RAND, AUTN (and ICCID, IMSI)
    POST /v1/sim/qa/check {card_id, rand, response}      -> ok, problems (never values)

Every Milenage block-cipher call is an HSM AES-ECB encryption with the card's Ki, unwrapped
from keymgmt's table (under the bureau SIM storage key) as a sensitive, non-extractable,
encrypt-only session object: Ki never exists in clear outside the HSM. RAND comes from the
HSM's RNG; each challenge takes a fresh SQN from sim_cards.qa_sqn (AMF 8000, the separation
bit set as for E-UTRAN).

SOFTHSM SHORTCUT (as for the OPc at preparation, sim.py): Milenage xors OPc into its inputs
and outputs, and SoftHSM 2.6.1 has no CKM_XOR_BASE_AND_DATA, so OPc = AES_Ki(OP) xor OP is
formed in a bytearray that is zeroed after use (OP opened from its vault seal on the HSM
worker). Recomputing it from the operator's OP also checks that the OPc the card was given
(stored wrapped, sent under K_DEK) is the one the operator's network will compute.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Final, cast
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Request
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pydantic import BaseModel, ConfigDict, Field

from services.keymgmt.hsm import Hsm
from services.keymgmt.p11 import SymKey, as_key, encrypt
from services.keymgmt.repository import KeymgmtRepository
from services.keymgmt.repository_sim import SimRepository
from services.keymgmt.sim import WRAP
from services.keymgmt.sim_api import op_context
from services.keymgmt.vault import open_sealed
from shared.auth import Principal, require

if TYPE_CHECKING:
    from pkcs11.types import UnwrapMixin

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/sim/qa", tags=["qa"])
QA_AMF: Final = bytes.fromhex("8000")
_ROTATIONS: Final = {1: 8, 2: 0, 3: 4, 4: 8, 5: 12}  # r1..r5 in bytes (TS 35.206 §4.1)


async def _qa_only(who: Annotated[Principal, Depends(require("service"))]) -> Principal:
    if who.name != "qa":
        raise HTTPException(403, f"service {who.name!r} may not call this endpoint")
    return who


Qa = Annotated[Principal, Depends(_qa_only)]


class ChallengeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    card_id: UUID


class CheckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    card_id: UUID
    rand: str = Field(pattern=r"^[0-9A-Fa-f]{32}$")
    response: str = Field(
        pattern=r"^([0-9A-Fa-f]{2}){1,64}$",
        repr=False,
        description="the AUTHENTICATE response data (without SW1 SW2)",
    )


# -- Milenage with the HSM as its block cipher (HSM worker functions) -----------------------
def _xor(a: bytes | bytearray, b: bytes | bytearray) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _rot(x: bytes, n: int) -> bytes:
    return x[n:] + x[:n]


def _c(i: int) -> bytes:
    return bytes(15) + bytes((0 if i == 1 else 1 << (i - 2),))


class _HsmMilenage:
    """f1..f5* where every E_K is C_Encrypt(CKM_AES_ECB) with the Ki object."""

    def __init__(self, ki: SymKey, opc: bytearray) -> None:
        self._ki, self._opc = ki, opc

    def _e(self, block: bytes) -> bytes:
        return encrypt(self._ki, block, Mechanism.AES_ECB)

    def _out(self, temp: bytes, i: int) -> bytes:
        return _xor(self._e(_xor(_rot(_xor(temp, self._opc), _ROTATIONS[i]), _c(i))), self._opc)

    def temp(self, rand: bytes) -> bytes:
        return self._e(_xor(rand, self._opc))

    def f1(self, temp: bytes, sqn: bytes, amf: bytes) -> bytes:
        in1 = sqn + amf + sqn + amf
        block = _xor(_xor(temp, _rot(_xor(in1, self._opc), _ROTATIONS[1])), _c(1))
        return _xor(self._e(block), self._opc)[:8]

    def f2_f5(self, temp: bytes) -> tuple[bytes, bytes]:
        out2 = self._out(temp, 2)
        return out2[8:], out2[:6]

    def f3(self, temp: bytes) -> bytes:
        return self._out(temp, 3)

    def f4(self, temp: bytes) -> bytes:
        return self._out(temp, 4)


def _session_ki(hsm: Hsm, storage_label: str, wrapped: bytes) -> SymKey:
    """The stored Ki unwrapped as a sensitive, non-extractable, encrypt-only session object."""
    template: dict[Attribute, Any] = {
        Attribute.TOKEN: False,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
    }
    storage = cast("UnwrapMixin", hsm.key(storage_label))
    key = storage.unwrap_key(
        ObjectClass.SECRET_KEY,
        KeyType.AES,
        wrapped,
        mechanism=WRAP,
        capabilities=MechanismFlag.ENCRYPT,
        template=template,
    )
    return as_key(key)


def _with_milenage(
    hsm: Hsm, sim: Mapping[str, Any], op_sealed: bytes, context: bytes
) -> tuple[_HsmMilenage, SymKey, bytearray]:
    ki = _session_ki(hsm, sim["storage_key_label"], bytes(sim["ki_stored"]))
    op = bytearray(open_sealed(hsm, op_sealed, context))
    try:
        opc = bytearray(encrypt(ki, bytes(op), Mechanism.AES_ECB))
        for i, b in enumerate(op):
            opc[i] ^= b
    except Exception:
        ki.destroy()
        raise
    finally:
        op[:] = bytes(len(op))
    return _HsmMilenage(ki, opc), ki, opc


def milenage_challenge(
    hsm: Hsm,
    sim: Mapping[str, Any],
    op_sealed: bytes,
    context: bytes,
    sqn: int,
    rand: bytes | None = None,
    amf: bytes = QA_AMF,
) -> tuple[bytes, bytes]:
    """(RAND, AUTN = SQN xor AK || AMF || MAC-A) for the card's SIM (HSM worker); RAND from
    the HSM's RNG unless a test vector gives it."""
    rand = hsm.random(16) if rand is None else rand
    milenage, ki, opc = _with_milenage(hsm, sim, op_sealed, context)
    try:
        temp = milenage.temp(rand)
        sqn_b = sqn.to_bytes(6, "big")
        _res, ak = milenage.f2_f5(temp)
        return rand, _xor(sqn_b, ak) + amf + milenage.f1(temp, sqn_b, amf)
    finally:
        opc[:] = bytes(16)
        ki.destroy()


def milenage_vectors(
    hsm: Hsm, sim: Mapping[str, Any], op_sealed: bytes, context: bytes, rand: bytes
) -> tuple[bytes, bytes, bytes]:
    """(XRES, CK, IK) of the card's SIM for RAND (HSM worker; values for comparison only)."""
    milenage, ki, opc = _with_milenage(hsm, sim, op_sealed, context)
    try:
        temp = milenage.temp(rand)
        xres, _ak = milenage.f2_f5(temp)
        return xres, milenage.f3(temp), milenage.f4(temp)
    finally:
        opc[:] = bytes(16)
        ki.destroy()


def parse_authenticate(response: bytes) -> tuple[bytes, bytes, bytes]:
    """`DB L RES L CK L IK [L Kc]` (TS 31.102 §7.1.2.1); ValueError names what is wrong."""
    if response[:1] == b"\xdc":
        raise ValueError("the card answered a synchronisation failure (AUTS)")
    if response[:1] != b"\xdb":
        raise ValueError(f"the answer starts with {response[:1].hex().upper() or 'nothing'}")
    fields, pos = [], 1
    for name in ("RES", "CK", "IK"):
        if pos >= len(response):
            raise ValueError(f"the answer ends before {name}")
        length = response[pos]
        value = response[pos + 1 : pos + 1 + length]
        if len(value) != length:
            raise ValueError(f"{name} is cut short")
        fields.append(value)
        pos += 1 + length
    return fields[0], fields[1], fields[2]


def check_answer(
    expected: tuple[bytes, bytes, bytes], answer: tuple[bytes, bytes, bytes]
) -> list[str]:
    problems = []
    for name, want, got in zip(("RES", "CK", "IK"), expected, answer, strict=True):
        if not hmac.compare_digest(want, got):
            problems.append(f"{name} differs from the one the HSM computed")
    return problems


# -- the endpoints ----------------------------------------------------------------------------
async def _sim_of(request: Request, card_id: UUID, sqn: bool) -> tuple[dict[str, Any], bytes]:
    runtime = request.app.state.runtime
    async with runtime.engine.begin() as conn:
        sims = SimRepository(conn)
        sim = await sims.card(card_id)
        if sim is None:
            raise HTTPException(404, f"card {card_id} is not a prepared SIM")
        product = await sims.product(sim["issuer_id"], sim["product_id"])
        if product is None:
            raise HTTPException(409, "the card's SIM product is gone")
        if sqn:
            sim["qa_sqn"] = await sims.next_qa_sqn(card_id)
        await KeymgmtRepository(conn).record_access([(card_id, "service:qa", "sim-qa")])
    return sim, bytes(product["op_sealed"])


@router.post("/challenge", summary="RAND and AUTN for a SIM's AUTHENTICATE at QA")
async def sim_challenge(body: ChallengeRequest, who: Qa, request: Request) -> Any:
    sim, op_sealed = await _sim_of(request, body.card_id, sqn=True)
    hsm: Hsm = request.app.state.runtime.gate.get()
    context = op_context(sim["issuer_id"], sim["product_id"])
    rand, autn = await hsm.call(milenage_challenge, sim, op_sealed, context, sim["qa_sqn"])
    return {
        "card_id": str(body.card_id),
        "iccid": sim["iccid"],
        "imsi": sim["imsi"],
        "rand": rand.hex().upper(),
        "autn": autn.hex().upper(),
    }


@router.post("/check", summary="Check a SIM's AUTHENTICATE answer (RES, CK, IK) in the HSM")
async def sim_check(body: CheckRequest, who: Qa, request: Request) -> Any:
    sim, op_sealed = await _sim_of(request, body.card_id, sqn=False)
    try:
        answer = parse_authenticate(bytes.fromhex(body.response))
    except ValueError as exc:
        return {"card_id": str(body.card_id), "ok": False, "problems": [str(exc)]}
    hsm: Hsm = request.app.state.runtime.gate.get()
    context = op_context(sim["issuer_id"], sim["product_id"])
    rand = bytes.fromhex(body.rand)
    expected = await hsm.call(milenage_vectors, sim, op_sealed, context, rand)
    problems = check_answer(expected, answer)
    if problems:
        log.info("SIM QA check failed", extra={"card_id": str(body.card_id)})
    return {"card_id": str(body.card_id), "ok": not problems, "problems": problems}
