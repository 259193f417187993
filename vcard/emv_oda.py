"""Card side of dynamic offline data authentication (EMV 4.3 Book 2 §6.5 DDA, §6.6 CDA).

The ICC private key arrives as DGI 8201 (docs/perso-protocol.md): a PKCS#8 PrivateKeyInfo
wrapped under K_DEK with AES key wrap with padding (RFC 5649), as a PKCS#11 HSM's C_WrapKey
with CKM_AES_KEY_WRAP_PAD produces it. `cryptography` unwraps and loads it; the EMV signature
is the raw RSA private-key operation on the Book 2 recovery format (no PKCS#1 padding), which
is computed with the key's own numbers.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from typing import Final

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding
from cryptography.hazmat.primitives.serialization import load_der_private_key

SDAD_FORMAT: Final = 0x05  # signed dynamic application data (Book 2 Table 17)
HASH_SHA1: Final = 0x01
ICC_DYNAMIC_NUMBER_LENGTH: Final = 8


def unwrap_icc_key(k_dek: bytes, wrapped: bytes) -> bytes:
    """DGI 8201 -> PKCS#8 DER of an RSA key; ValueError if it does not unwrap or load."""
    try:
        unwrapped = aes_key_unwrap_with_padding(k_dek, wrapped)
    except InvalidUnwrap as exc:
        raise ValueError("DGI 8201 does not unwrap under K_DEK") from exc
    der = unwrapped[: der_length(unwrapped)]
    if any(unwrapped[len(der) :]):
        raise ValueError("DGI 8201 has data after its PKCS#8 key")
    icc_key_numbers(der)
    return der


def der_length(data: bytes) -> int:
    """The length of the DER SEQUENCE that `data` starts with (X.690 §8.1.3): an HSM's
    C_WrapKey may pad the PKCS#8 encoding with zeros to a multiple of 8 bytes before RFC 5649
    (SoftHSM 2.6.1 does), so the key is what its own length says, not the unwrapped blob."""
    if len(data) < 2 or data[0] != 0x30:
        raise ValueError("DGI 8201 is not a PKCS#8 private key")
    first = data[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if not 1 <= count <= 3 or len(data) < 2 + count:
        raise ValueError("DGI 8201 is not a PKCS#8 private key")
    total = 2 + count + int.from_bytes(data[2 : 2 + count], "big")
    if total > len(data):
        raise ValueError("DGI 8201 is shorter than its PKCS#8 key")
    return total


@functools.lru_cache(maxsize=64)
def icc_key_numbers(der: bytes) -> rsa.RSAPrivateNumbers:
    """The numbers of a PKCS#8 RSA key; ValueError if it is not one. Its primes are not
    tested (`unsafe_skip_rsa_key_validation`), as a card's RSA engine does not test them: a
    wrong key shows in the first dynamic signature a terminal checks, and the test was the
    card feeder's costliest step (a quarter of its CPU at 1,000 cards)."""
    try:
        key = load_der_private_key(der, password=None, unsafe_skip_rsa_key_validation=True)
    except ValueError as exc:
        raise ValueError("DGI 8201 is not a PKCS#8 private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("DGI 8201 is not an RSA private key")
    return key.private_numbers()


def icc_dynamic_number() -> bytes:
    return secrets.token_bytes(ICC_DYNAMIC_NUMBER_LENGTH)


def sign_dynamic_data(der: bytes, icc_dynamic_data: bytes, terminal_data: bytes) -> bytes:
    """Signed Dynamic Application Data (Book 2 Table 17): the recovered data is
    6A || 05 || 01 || LDD || ICC dynamic data || BB padding || SHA-1 || BC, N_IC bytes long; the
    hash covers format through padding, then the terminal's dynamic data (the DDOL data for DDA,
    the unpredictable number for CDA)."""
    numbers = icc_key_numbers(der)
    n = numbers.public_numbers.n
    size = (n.bit_length() + 7) // 8
    pad = size - 25 - len(icc_dynamic_data)
    if pad < 0:
        raise ValueError("ICC dynamic data too long for the ICC key")
    body = bytes((SDAD_FORMAT, HASH_SHA1, len(icc_dynamic_data))) + icc_dynamic_data + b"\xbb" * pad
    digest = hashlib.sha1(body + terminal_data, usedforsecurity=False).digest()
    message = int.from_bytes(b"\x6a" + body + digest + b"\xbc", "big")
    # CRT form of m^d mod n (PKCS#1 §5.1.2), with the numbers cryptography loaded.
    p, q = numbers.p, numbers.q
    m1 = pow(message, numbers.dmp1, p)
    m2 = pow(message, numbers.dmq1, q)
    h = (numbers.iqmp * (m1 - m2)) % p
    return (m2 + h * q).to_bytes(size, "big")


def dda_dynamic_data(number: bytes) -> bytes:
    """ICC dynamic data for DDA: LICCDN || ICC dynamic number (Book 2 §6.5.1)."""
    return bytes((len(number),)) + number


def cda_dynamic_data(number: bytes, cid: int, ac: bytes, tx_hash: bytes) -> bytes:
    """ICC dynamic data for CDA (Book 2 Table 19): LICCDN || number || CID || AC || hash code."""
    return bytes((len(number),)) + number + bytes((cid,)) + ac + tx_hash
