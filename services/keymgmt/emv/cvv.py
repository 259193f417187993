"""Visa CVV, iCVV and CVV2 from the issuer's CVK pair, every DES step done by the HSM.

The Visa card verification value algorithm (the CVV/CVC method payment HSMs implement):
    data  = PAN || expiry (YYMM) || service code, right-padded with 0 to 32 digits = B1 || B2
    x     = DES_A(B1) xor B2
    r     = DES_A(DES_B^-1(DES_A(x)))            (3DES-EDE under CVK-A || CVK-B)
    value = decimalise(r): hex digits 0-9 left to right, then A-F as 0-5; the first 3.
iCVV is the same with service code 999 (the chip's track 2 equivalent data) and CVV2 with
service code 000 (printed on the card).

The CVK is held as two single-DES key objects, CVK-A and CVK-B (two ceremonies, one KCV
each), so that each step is one HSM operation: DES-CBC under A with a zero IV over B1 || B2
gives DES_A(DES_A(B1) xor B2) (the xor happens inside the HSM too), then DES-ECB decrypt under
B, then DES-ECB encrypt under A. Single DES needs OpenSSL's legacy provider in SoftHSM's
process (OPENSSL_CONF, see INFRA.md).

SOFTHSM ROUTE vs a payment HSM: a payment HSM computes a CVV in one command from the PAN,
expiry and service code, and only the 3 digits leave it. Here the two intermediate
ciphertexts (after the CBC step and after DES_B^-1) pass through process memory between
HSM calls. They are not the key, but with enough of them an attacker could mount a
known-plaintext attack on each 56-bit half separately, so this route is for test and
development tokens; the CVK never leaves the HSM either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pkcs11 import Mechanism

from services.keymgmt.emv.pin import decimalise
from services.keymgmt.hsm.p11 import decrypt, encrypt
from services.keymgmt.hsm.session import Hsm, key_label

ICVV_SERVICE_CODE = "999"
CVV2_SERVICE_CODE = "000"


@dataclass(frozen=True)
class CvkLabels:
    a: str
    b: str

    @classmethod
    def for_issuer(cls, issuer: str, version: int = 1) -> CvkLabels:
        return cls(key_label(issuer, "CVK-A", version), key_label(issuer, "CVK-B", version))


@dataclass(frozen=True)
class CardVerificationValues:
    """Magnetic-stripe CVV, chip iCVV and printed CVV2 of one card; never logged."""

    cvv: str = field(repr=False)
    icvv: str = field(repr=False)
    cvv2: str = field(repr=False)


def cvv_input(pan: str, expiry: str, service_code: str) -> bytes:
    if not pan.isdigit() or not 12 <= len(pan) <= 19:
        raise ValueError("a PAN is 12-19 digits")
    if not expiry.isdigit() or len(expiry) != 4:
        raise ValueError("expiry is YYMM")
    if not service_code.isdigit() or len(service_code) != 3:
        raise ValueError("a service code is 3 digits")
    return bytes.fromhex((pan + expiry + service_code).ljust(32, "0"))


def visa_cvv(hsm: Hsm, cvk: CvkLabels, pan: str, expiry: str, service_code: str) -> str:
    """One CVV (HSM worker): three HSM operations, no key outside the HSM."""
    key_a, key_b = hsm.key(cvk.a), hsm.key(cvk.b)
    chained = encrypt(key_a, cvv_input(pan, expiry, service_code), Mechanism._DES_CBC, bytes(8))
    step = decrypt(key_b, chained[8:], Mechanism._DES_ECB)
    return decimalise(encrypt(key_a, step, Mechanism._DES_ECB), 3)


def card_verification_values(
    hsm: Hsm, cvk: CvkLabels, pan: str, expiry: str, service_code: str
) -> CardVerificationValues:
    return CardVerificationValues(
        cvv=visa_cvv(hsm, cvk, pan, expiry, service_code),
        icvv=visa_cvv(hsm, cvk, pan, expiry, ICVV_SERVICE_CODE),
        cvv2=visa_cvv(hsm, cvk, pan, expiry, CVV2_SERVICE_CODE),
    )
