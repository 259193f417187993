"""EMV Book 2 offline data authentication formats: the issuer public key certificate (§5.3,
format '02'), signed static application data (§5.4, format '03') and the ICC public key
certificate (§6.4, format '04'); each is a block `6A || ... || hash || BC` of the signer's
modulus length, signed by raw RSA in the HSM (hsm/rsa.py). Hash algorithm '01' is SHA-1 and
public key algorithm '01' is RSA, as Book 2 Annex B defines.

The checks of an imported issuer certificate recover it with the CA public key (a public
operation, done here in Python) and refuse it with the reason named.
"""

from __future__ import annotations

import calendar
import hashlib
from dataclasses import dataclass
from datetime import date

from services.keymgmt.hsm.rsa import RsaPublic
from services.keymgmt.hsm.session import key_label

HEADER, TRAILER, PAD = 0x6A, 0xBC, 0xBB
SHA1, RSA = 0x01, 0x01
TEST_RID = "A000000003"  # the RID the bureau's test CA key is registered under


def bureau_test_ca_label(index: int) -> str:
    return key_label("bureau", "TESTCA", index)


def issuer_key_label(issuer_id: str, version: int = 1) -> str:
    return key_label(issuer_id, "ISSRSA", version)


class OdaError(ValueError):
    """A certificate or ODA input is refused; the message names what is wrong."""


def _bcd_pad(digits: str, size: int) -> bytes:
    return bytes.fromhex(digits.ljust(size * 2, "F"))


def mmyy(value: date) -> bytes:
    return bytes.fromhex(f"{value.month:02d}{value.year % 100:02d}")


def expiry_of(raw: bytes) -> date:
    """The last day of the MMYY month a certificate expires in (Book 2 §5.3 step 8)."""
    text = raw.hex()
    month, year = int(text[:2]), 2000 + int(text[2:])
    if not 1 <= month <= 12:
        raise OdaError(f"certificate expiration date {text} is not MMYY")
    return date(year, month, calendar.monthrange(year, month)[1])


def _split(public: RsaPublic, room: int) -> tuple[bytes, bytes]:
    """(the modulus' leftmost digits padded with BB to `room`, the remainder)."""
    if public.size <= room:
        return public.modulus.ljust(room, bytes([PAD])), b""
    return public.modulus[:room], public.modulus[room:]


@dataclass(frozen=True)
class Certificate:
    """A formatted block and the data that goes with it on the card."""

    block: bytes  # to be signed with CKM_RSA_X_509
    remainder: bytes
    exponent: bytes


def issuer_certificate_block(
    issuer_public: RsaPublic, bin_digits: str, expires: date, serial: bytes, ca_size: int
) -> Certificate:
    """Book 2 Table 6: issuer public key certificate data, NCA bytes."""
    if len(serial) != 3:
        raise OdaError("certificate serial number must be 3 bytes")
    if issuer_public.size > ca_size:
        raise OdaError("the issuer key is longer than the CA key (Book 2: NI <= NCA)")
    if not bin_digits.isdigit() or not 3 <= len(bin_digits) <= 8:
        raise OdaError("issuer identifier must be 3-8 PAN digits")
    leftmost, remainder = _split(issuer_public, ca_size - 36)
    body = (
        bytes([0x02])
        + _bcd_pad(bin_digits, 4)
        + mmyy(expires)
        + serial
        + bytes([SHA1, RSA, issuer_public.size, len(issuer_public.exponent)])
        + leftmost
    )
    digest = hashlib.sha1(body + remainder + issuer_public.exponent, usedforsecurity=False)
    block = bytes([HEADER]) + body + digest.digest() + bytes([TRAILER])
    return Certificate(block, remainder, issuer_public.exponent)


def icc_certificate_block(
    icc_public: RsaPublic, pan: str, expiry_yymm: str, serial: bytes, static: bytes, ni: int
) -> Certificate:
    """Book 2 Table 14: ICC public key certificate data, NI bytes; its hash covers the static
    data to be authenticated."""
    if icc_public.size > ni:
        raise OdaError("the ICC key is longer than the issuer key (Book 2: NIC <= NI)")
    leftmost, remainder = _split(icc_public, ni - 42)
    expires = bytes.fromhex(expiry_yymm[2:] + expiry_yymm[:2])  # MMYY
    body = (
        bytes([0x04])
        + _bcd_pad(pan, 10)
        + expires
        + serial
        + bytes([SHA1, RSA, icc_public.size, len(icc_public.exponent)])
        + leftmost
    )
    digest = hashlib.sha1(body + remainder + icc_public.exponent + static, usedforsecurity=False)
    block = bytes([HEADER]) + body + digest.digest() + bytes([TRAILER])
    return Certificate(block, remainder, icc_public.exponent)


def sda_block(dac: bytes, static: bytes, ni: int) -> bytes:
    """Book 2 Table 7: signed static application data, NI bytes."""
    if len(dac) != 2:
        raise OdaError("data authentication code must be 2 bytes")
    body = bytes([0x03, SHA1]) + dac + bytes([PAD]) * (ni - 26)
    digest = hashlib.sha1(body + static, usedforsecurity=False).digest()
    return bytes([HEADER]) + body + digest + bytes([TRAILER])


def recover(signature: bytes, public: RsaPublic) -> bytes:
    """The RSA public operation (Book 2 §5.3 step 2)."""
    n = int.from_bytes(public.modulus, "big")
    value = pow(int.from_bytes(signature, "big"), int.from_bytes(public.exponent, "big"), n)
    return value.to_bytes(public.size, "big")


@dataclass(frozen=True)
class IssuerCertificateFacts:
    bin_digits: str
    expires: date
    serial: bytes
    modulus: bytes


def check_issuer_certificate(
    certificate: bytes,
    remainder: bytes,
    exponent: bytes,
    ca: RsaPublic,
    issuer_key: RsaPublic,
    today: date,
) -> IssuerCertificateFacts:
    """Book 2 §5.3 steps 1-9 on an imported certificate, plus the bureau's own check that the
    certified key is the issuer key in our HSM. OdaError names the failing step."""
    if len(certificate) != ca.size:
        raise OdaError(f"certificate is {len(certificate)} bytes, the CA modulus {ca.size}")
    data = recover(certificate, ca)
    if data[0] != HEADER or data[-1] != TRAILER:
        raise OdaError("bad signature: the recovered data has no 6A header / BC trailer")
    if data[1] != 0x02:
        raise OdaError(f"certificate format is {data[1]:02X}, not 02")
    body, digest = data[1:-21], data[-21:-1]
    pk_length, exp_length = data[13], data[14]
    if exponent != issuer_key.exponent or len(exponent) != exp_length:
        raise OdaError("issuer public key exponent does not match the issuer key")
    expected = hashlib.sha1(body + remainder + exponent, usedforsecurity=False).digest()
    if expected != digest:
        raise OdaError("bad signature: the hash result does not match the certificate data")
    room = ca.size - 36
    modulus = data[15 : 15 + min(pk_length, room)] + remainder
    if pk_length != issuer_key.size or modulus != issuer_key.modulus:
        raise OdaError("the certified modulus does not match the issuer key in the HSM")
    expires = expiry_of(data[6:8])
    if expires < today:
        raise OdaError(f"certificate expired on {expires.isoformat()}")
    bin_digits = data[2:6].hex().upper().rstrip("F")
    return IssuerCertificateFacts(bin_digits, expires, data[8:11], modulus)
