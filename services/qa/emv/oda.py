"""Offline data authentication, terminal side (EMV 4.3 Book 2 §5 SDA, §6 DDA and CDA).

Recovery is the RSA public operation on the certificate or signature (Book 2 Annex A2.1), then
the checks of Book 2 in their order; each failure raises OdaFailure naming the object and the
check that failed. The CA public keys a terminal trusts are configuration, by RID and index.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from typing import Final

HEADER: Final = 0x6A
TRAILER: Final = 0xBC
FORMAT_ISSUER_CERT: Final = 0x02
FORMAT_SSAD: Final = 0x03
FORMAT_ICC_CERT: Final = 0x04
FORMAT_SDAD: Final = 0x05
HASH_SHA1: Final = 0x01
PK_RSA: Final = 0x01


class OdaFailure(Exception):
    """Offline data authentication failed; the message names the object and the check."""


@dataclass(frozen=True)
class PublicKey:
    modulus: bytes
    exponent: bytes

    @property
    def size(self) -> int:
        return len(self.modulus)


def recover(data: bytes, key: PublicKey, what: str) -> bytes:
    """The RSA public operation; the input is as long as the modulus (Book 2 §5.3 step 1)."""
    if len(data) != key.size:
        raise OdaFailure(f"{what}: {len(data)} bytes, the key's modulus is {key.size}")
    n = int.from_bytes(key.modulus, "big")
    value = int.from_bytes(data, "big")
    if value >= n:
        raise OdaFailure(f"{what}: not below the modulus")
    recovered = pow(value, int.from_bytes(key.exponent, "big"), n).to_bytes(key.size, "big")
    if recovered[0] != HEADER or recovered[-1] != TRAILER:
        raise OdaFailure(f"{what}: recovered data header/trailer is not 6A..BC")
    return recovered


def _check_hash(recovered: bytes, extra: bytes, what: str) -> None:
    body, digest = recovered[1:-21], recovered[-21:-1]
    if hashlib.sha1(body + extra, usedforsecurity=False).digest() != digest:
        raise OdaFailure(f"{what}: hash result does not match")


def _expired(mmyy: bytes, today: date) -> bool:
    month, year = int(mmyy[:1].hex()), 2000 + int(mmyy[1:].hex())
    return (year, month) < (today.year, today.month)


def _key_from(
    recovered: bytes, offset: int, room: int, remainder: bytes, exponent: bytes, what: str
) -> PublicKey:
    if recovered[offset - 4] != HASH_SHA1 or recovered[offset - 3] != PK_RSA:
        raise OdaFailure(f"{what}: hash or public key algorithm indicator is not 01")
    length = recovered[offset - 2]
    if length > room and len(remainder) != length - room:
        raise OdaFailure(f"{what}: the public key remainder is missing or of the wrong length")
    leftmost = recovered[offset : offset + room]
    modulus = leftmost[:length] if length <= room else leftmost + remainder
    return PublicKey(modulus, exponent)


def recover_issuer_key(
    cert: bytes, remainder: bytes, exponent: bytes, ca: PublicKey, pan: str, today: date
) -> PublicKey:
    """Book 2 §5.3 steps 1-10: the issuer public key from '90', '92', '9F32'."""
    what = "issuer public key certificate (90)"
    recovered = recover(cert, ca, what)
    if recovered[1] != FORMAT_ISSUER_CERT:
        raise OdaFailure(f"{what}: certificate format is not 02")
    _check_hash(recovered, remainder + exponent, what)
    issuer_id = recovered[2:6].hex().upper().rstrip("F")
    if not 3 <= len(issuer_id) <= 8 or not pan.startswith(issuer_id):
        raise OdaFailure(f"{what}: issuer identifier does not match the PAN")
    if _expired(recovered[6:8], today):
        raise OdaFailure(f"{what}: certificate expired")
    if recovered[14] != len(exponent):
        raise OdaFailure(f"{what}: exponent length does not match 9F32")
    return _key_from(recovered, 15, ca.size - 36, remainder, exponent, what)


def verify_sda(ssad: bytes, issuer: PublicKey, static_data: bytes) -> bytes:
    """Book 2 §5.4: signed static application data '93'; returns the data authentication code."""
    what = "signed static application data (93)"
    recovered = recover(ssad, issuer, what)
    if recovered[1] != FORMAT_SSAD or recovered[2] != HASH_SHA1:
        raise OdaFailure(f"{what}: format is not 03 or hash algorithm not 01")
    _check_hash(recovered, static_data, what)
    return recovered[3:5]


def recover_icc_key(
    cert: bytes,
    remainder: bytes,
    exponent: bytes,
    issuer: PublicKey,
    pan: bytes,
    static_data: bytes,
    today: date,
) -> PublicKey:
    """Book 2 §6.4: the ICC public key from '9F46', '9F48', '9F47' and the static data."""
    what = "ICC public key certificate (9F46)"
    recovered = recover(cert, issuer, what)
    if recovered[1] != FORMAT_ICC_CERT:
        raise OdaFailure(f"{what}: certificate format is not 04")
    _check_hash(recovered, remainder + exponent + static_data, what)
    cert_pan = recovered[2:12].hex().upper().rstrip("F")
    if cert_pan != pan.hex().upper().rstrip("F"):
        raise OdaFailure(f"{what}: application PAN does not match 5A")
    if _expired(recovered[12:14], today):
        raise OdaFailure(f"{what}: certificate expired")
    if recovered[20] != len(exponent):
        raise OdaFailure(f"{what}: exponent length does not match 9F47")
    return _key_from(recovered, 21, issuer.size - 42, remainder, exponent, what)


def verify_sdad(sdad: bytes, icc: PublicKey, terminal_data: bytes, what: str) -> bytes:
    """Book 2 §6.5.2 / §6.6.2: signed dynamic application data; returns the ICC dynamic data."""
    recovered = recover(sdad, icc, what)
    if recovered[1] != FORMAT_SDAD or recovered[2] != HASH_SHA1:
        raise OdaFailure(f"{what}: format is not 05 or hash algorithm not 01")
    length = recovered[3]
    if 4 + length > icc.size - 21:
        raise OdaFailure(f"{what}: ICC dynamic data length overruns the signature")
    _check_hash(recovered, terminal_data, what)
    return recovered[4 : 4 + length]
