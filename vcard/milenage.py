"""Milenage (3GPP TS 35.206), the USIM's authentication functions, in software on the card.

The virtual card is a separate device with its own implementation: keymgmt's HSM-backed one
(services/keymgmt/sim/secrets.py, sim_qa.py) is never imported here. Kernel: AES-128 (TS 35.206 §4.1
allows any 128-bit block cipher; Milenage's reference choice is Rijndael = AES-128).

    TEMP = E_K(RAND xor OPc)
    OUT1 = E_K(TEMP xor rot(IN1 xor OPc, r1) xor c1) xor OPc,  IN1 = SQN || AMF || SQN || AMF
    OUTi = E_K(rot(TEMP xor OPc, ri) xor ci) xor OPc,          i = 2..5
    f1 = OUT1[0:8], f1* = OUT1[8:16], f5 = OUT2[0:6], f2 = OUT2[8:16], f3 = OUT3, f4 = OUT4,
    f5* = OUT5[0:6];  r1..r5 = 64, 0, 32, 64, 96 bits; c1 = 0, ci = 1 << (i - 2) (last byte).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from vcard.crypto import aes_ecb_encrypt

_ROTATIONS: Final = {1: 64, 2: 0, 3: 32, 4: 64, 5: 96}


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _rot(x: bytes, bits: int) -> bytes:
    """Cyclic rotation of a 128-bit value towards the most significant end (whole bytes)."""
    n = (bits // 8) % 16
    return x[n:] + x[:n]


def _constant(i: int) -> bytes:
    return bytes(15) + bytes((0 if i == 1 else 1 << (i - 2),))


def opc_of(k: bytes, op: bytes) -> bytes:
    """OPc = OP xor E_K(OP) (TS 35.206 §4.1)."""
    return _xor(aes_ecb_encrypt(k, op), op)


@dataclass(frozen=True)
class Vectors:
    """What f2..f5 give for one RAND: RES, CK, IK and the anonymity key AK."""

    res: bytes = field(repr=False)
    ck: bytes = field(repr=False)
    ik: bytes = field(repr=False)
    ak: bytes = field(repr=False)


class Milenage:
    """f1, f1*, f2, f3, f4, f5, f5* for one subscriber key K and its OPc."""

    def __init__(self, k: bytes, opc: bytes) -> None:
        if len(k) != 16 or len(opc) != 16:
            raise ValueError("K and OPc are 16 bytes each")
        self._k, self._opc = k, opc

    def __repr__(self) -> str:  # never show K or OPc
        return "Milenage(...)"

    def _temp(self, rand: bytes) -> bytes:
        if len(rand) != 16:
            raise ValueError("RAND is 16 bytes")
        return aes_ecb_encrypt(self._k, _xor(rand, self._opc))

    def _out(self, temp: bytes, i: int) -> bytes:
        block = _xor(_rot(_xor(temp, self._opc), _ROTATIONS[i]), _constant(i))
        return _xor(aes_ecb_encrypt(self._k, block), self._opc)

    def f1(self, rand: bytes, sqn: bytes, amf: bytes) -> tuple[bytes, bytes]:
        """(MAC-A, MAC-S): f1 and f1* over SQN (6 bytes) and AMF (2 bytes)."""
        if len(sqn) != 6 or len(amf) != 2:
            raise ValueError("SQN is 6 bytes and AMF 2")
        temp = self._temp(rand)
        in1 = sqn + amf + sqn + amf
        block = _xor(_xor(temp, _rot(_xor(in1, self._opc), _ROTATIONS[1])), _constant(1))
        out1 = _xor(aes_ecb_encrypt(self._k, block), self._opc)
        return out1[:8], out1[8:]

    def f2345(self, rand: bytes) -> Vectors:
        temp = self._temp(rand)
        out2 = self._out(temp, 2)
        return Vectors(res=out2[8:], ck=self._out(temp, 3), ik=self._out(temp, 4), ak=out2[:6])

    def f5_star(self, rand: bytes) -> bytes:
        return self._out(self._temp(rand), 5)[:6]
