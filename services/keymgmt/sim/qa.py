"""SIM QA in the HSM (HSM-worker functions; the endpoints are api.py's): keymgmt challenges
a personalised USIM as the operator's network would and checks its AUTHENTICATE answer
(3GPP TS 33.102 §6.3, Milenage TS 35.206).

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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, cast

from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass

from services.keymgmt.hsm.p11 import SymKey, as_key, encrypt
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.sim.secrets import WRAP
from services.keymgmt.vault.crypto import open_sealed

if TYPE_CHECKING:
    from pkcs11.types import UnwrapMixin

QA_AMF: Final = bytes.fromhex("8000")
_ROTATIONS: Final = {1: 8, 2: 0, 3: 4, 4: 8, 5: 12}  # r1..r5 in bytes (TS 35.206 §4.1)


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
