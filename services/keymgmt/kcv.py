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

from services.keymgmt.p11 import SymKey

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
    """KCV of a key object (run on the HSM worker).

    The zero-block methods read CKA_CHECK_VALUE, which the token computes itself at creation
    (so they work for derive-only keys); the CMAC method needs a key that may sign with
    CKM_AES_CMAC.
    """
    if method is KcvMethod.AES_CMAC:
        value = key.sign(bytes(16), mechanism=Mechanism.AES_CMAC)[:KCV_LEN]
    else:
        value = bytes(key[Attribute.CHECK_VALUE])[:KCV_LEN]
    return Kcv(value.hex().upper(), method)
