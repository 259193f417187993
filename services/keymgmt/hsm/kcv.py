"""Key check values, computed inside the HSM, always reported with the method that made them.

- DES (ANSI X9.24-1, and CKA_CHECK_VALUE in PKCS#11 v2.40 section 4.10): first 3 bytes of
  3DES-ECB(key, 8 zero bytes).
- AES, CMAC method (ANSI X9.24-1:2017, the one payment HSMs use): first 3 bytes of
  AES-CMAC(key, 16 zero bytes).
- AES, zero-block method (PKCS#11 CKA_CHECK_VALUE, most general-purpose HSMs): first 3 bytes
  of AES-ECB(key, 16 zero bytes).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import StrEnum

from pkcs11 import Attribute, Mechanism

from services.keymgmt.hsm.p11 import SymKey

KCV_LEN = 3


class KcvMethod(StrEnum):
    DES = "DES-3DES-ECB-ZERO"
    AES_CMAC = "AES-CMAC-X9.24-1-2017"
    AES_ZERO_BLOCK = "AES-ECB-ZERO-BLOCK"


@dataclass(frozen=True)
class Kcv:
    value: str  # upper-case hex, 6 digits
    method: KcvMethod

    def matches(self, expected: str) -> bool:
        return hmac.compare_digest(self.value, normalise_kcv(expected))

    def __str__(self) -> str:
        return f"{self.value} ({self.method.value})"


def normalise_kcv(text: str) -> str:
    value = text.replace(" ", "").upper()
    if len(value) != 2 * KCV_LEN or any(c not in "0123456789ABCDEF" for c in value):
        raise ValueError(f"a KCV is {KCV_LEN} bytes of hex")
    return value


def kcv_of(key: SymKey, method: KcvMethod) -> Kcv:
    """KCV of a created or generated key object (run on the HSM worker).

    The zero-block methods read CKA_CHECK_VALUE, which the token computes itself at creation
    (so they work for derive-only keys); the CMAC method needs a key that may sign with
    CKM_AES_CMAC. Do NOT use this for keys made by C_DeriveKey: SoftHSM 2.6.1 stores a
    CKA_CHECK_VALUE for *_ENCRYPT_DATA-derived keys that does not match the key (measured);
    use kcv_computed for those.
    """
    if method is KcvMethod.AES_CMAC:
        value = key.sign(bytes(16), mechanism=Mechanism.AES_CMAC)[:KCV_LEN]
    else:
        value = bytes(key[Attribute.CHECK_VALUE])[:KCV_LEN]
    return Kcv(value.hex().upper(), method)


def kcv_computed(key: SymKey, method: KcvMethod) -> Kcv:
    """KCV computed by the HSM with the key itself: needs ENCRYPT (or SIGN for CMAC)."""
    if method is KcvMethod.AES_CMAC:
        return kcv_of(key, method)
    if method is KcvMethod.DES:
        out = key.encrypt(bytes(8), mechanism=Mechanism.DES3_ECB)
    else:
        out = key.encrypt(bytes(16), mechanism=Mechanism.AES_ECB)
    if not isinstance(out, bytes):
        raise TypeError("expected a one-shot result")
    return Kcv(out[:KCV_LEN].hex().upper(), method)
