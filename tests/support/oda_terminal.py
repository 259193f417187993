"""A terminal's view of EMV Book 2 offline data authentication, written from the specification
for tests (it imports none of keymgmt's EMV code): the RSA public operation with `cryptography`'s
public numbers, then the checks Book 2 §5.3, §5.4 and §6.4 list, step by step.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa


class OdaFailed(AssertionError):
    pass


def public_key(modulus: bytes, exponent: bytes) -> rsa.RSAPublicKey:
    numbers = rsa.RSAPublicNumbers(int.from_bytes(exponent, "big"), int.from_bytes(modulus, "big"))
    return numbers.public_key()


def rsa_recover(signature: bytes, key: rsa.RSAPublicKey) -> bytes:
    """Book 2 §5.3 step 2: the public operation (RSAPublicNumbers give n and e)."""
    numbers = key.public_numbers()
    size = (numbers.n.bit_length() + 7) // 8
    if len(signature) != size:
        raise OdaFailed(f"signature is {len(signature)} bytes, modulus {size}")
    value = pow(int.from_bytes(signature, "big"), numbers.e, numbers.n)
    return value.to_bytes(size, "big")


def _framed(data: bytes, fmt: int) -> None:
    if data[0] != 0x6A or data[-1] != 0xBC:
        raise OdaFailed("recovered data header/trailer wrong")
    if data[1] != fmt:
        raise OdaFailed(f"certificate format {data[1]:02X}, expected {fmt:02X}")


@dataclass(frozen=True)
class Recovered:
    identifier: bytes  # issuer identifier (issuer cert) or PAN (ICC cert)
    expiry_mmyy: str
    modulus: bytes
    exponent: bytes


def recover_issuer_key(
    cert: bytes, remainder: bytes, exponent: bytes, ca: rsa.RSAPublicKey
) -> Recovered:
    """Book 2 §5.3: the issuer public key from its certificate (format 02)."""
    data = rsa_recover(cert, ca)
    _framed(data, 0x02)
    n_ca = len(data)
    if data[11] != 0x01 or data[12] != 0x01:
        raise OdaFailed("hash or public key algorithm indicator is not 01")
    n_i = data[13]
    leftmost = data[15 : 15 + n_ca - 36]
    digest = data[15 + n_ca - 36 : n_ca - 1]
    if hashlib.sha1(data[1 : 15 + n_ca - 36] + remainder + exponent).digest() != digest:
        raise OdaFailed("issuer certificate hash does not match")
    modulus = leftmost[:n_i] if n_i <= n_ca - 36 else leftmost + remainder
    return Recovered(data[2:6], data[6:8].hex(), modulus, exponent)


def recover_icc_key(
    cert: bytes, remainder: bytes, exponent: bytes, static: bytes, issuer: rsa.RSAPublicKey
) -> Recovered:
    """Book 2 §6.4: the ICC public key from its certificate (format 04)."""
    data = rsa_recover(cert, issuer)
    _framed(data, 0x04)
    n_i = len(data)
    n_ic = data[19]
    leftmost = data[21 : 21 + n_i - 42]
    digest = data[21 + n_i - 42 : n_i - 1]
    hashed = data[1 : 21 + n_i - 42] + remainder + exponent + static
    if hashlib.sha1(hashed).digest() != digest:
        raise OdaFailed("ICC certificate hash does not match")
    modulus = leftmost[:n_ic] if n_ic <= n_i - 42 else leftmost + remainder
    return Recovered(data[2:12], data[12:14].hex(), modulus, exponent)


def verify_sda(ssad: bytes, static: bytes, issuer: rsa.RSAPublicKey) -> bytes:
    """Book 2 §5.4: the data authentication code of valid signed static data."""
    data = rsa_recover(ssad, issuer)
    _framed(data, 0x03)
    if data[2] != 0x01:
        raise OdaFailed("hash algorithm indicator is not 01")
    if hashlib.sha1(data[1:-21] + static).digest() != data[-21:-1]:
        raise OdaFailed("SDA hash does not match")
    return data[3:5]
