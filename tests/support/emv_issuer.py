"""A test "issuer" for EMV cards, written from EMV 4.3 Book 2/3 and EMV CPS with `cryptography`
and pyemv only (no vcard/, no services/keymgmt): a test CA key, the issuer public key
certificate, per card an ICC key pair and its certificate, the signed static application data,
and the DGIs of docs/perso-protocol.md ("EMV payment application") with the sensitive ones
encrypted under the card's K_DEK. `corrupt=` breaks one ODA object for the failure tests.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from pyemv import kd

from shared.iso7816 import tlv

RID = bytes.fromhex("A000000003")
CA_INDEX = 0x92
AID = RID + bytes.fromhex("1010")
IMK_AC = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
IMK_SMI = bytes.fromhex("11111111111111112222222222222222")
IMK_SMC = bytes.fromhex("33333333333333334444444444444444")
PAN, PSN, EXPIRY, PIN = "5413330089010012", "01", "301231", "1234"
AIP = bytes.fromhex("7D00")  # SDA, DDA, cardholder verification, TRM, issuer auth, CDA
PDOL_CONTACT = bytes.fromhex("9F66049F02069F37045F2A02")
PDOL_CONTACTLESS = bytes.fromhex("9F66049F02069F37045F2A029F1A02")
CDOL1 = bytes.fromhex("9F02069F03069F1A0295055F2A029A039C019F3704")  # 29 bytes of data
CDOL2 = bytes.fromhex("8A029F02069F03069F1A0295055F2A029A039C019F3704")  # 31 bytes
# CVM list: X, Y = 0; offline plaintext PIN if the terminal supports it (fail -> next),
# then signature, then no CVM (Book 3 Annex C3).
CVM_LIST = bytes(8) + bytes.fromhex("4103" + "5E03" + "1F03")
AFL = bytes.fromhex("08010100" + "10010101" + "18010300")
Corruption = Literal["issuer_cert", "icc_cert", "ssad", "icc_key", "static_data"] | None


def _aes_ecb(key: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def k_dek_of(kmc: bytes, cplc: bytes) -> bytes:
    """CPG202-AES key 03 from docs/perso-protocol.md, coded here from the document."""
    d = cplc[0:4] + cplc[12:18]
    return _aes_ecb(kmc, d[4:10] + b"\xf0\x03" + d[4:10] + b"\x0f\x03")


def _n_bytes(key: rsa.RSAPrivateKey) -> tuple[bytes, bytes]:
    pub = key.public_key().public_numbers()
    size = (pub.n.bit_length() + 7) // 8
    exp = pub.e.to_bytes((pub.e.bit_length() + 7) // 8, "big")
    return pub.n.to_bytes(size, "big"), exp


def rsa_sign_raw(key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    """Book 2 Annex A2.1: the signature is the plain RSA private operation on the message."""
    numbers = key.private_numbers()
    n = numbers.public_numbers.n
    return pow(int.from_bytes(message, "big"), numbers.d, n).to_bytes(len(message), "big")


def _sha1(data: bytes) -> bytes:
    return hashlib.sha1(data, usedforsecurity=False).digest()


@functools.cache
def _key(bits: int, label: str) -> rsa.RSAPrivateKey:
    del label  # one cached key per role
    return rsa.generate_private_key(public_exponent=3, key_size=bits)


def ca_key() -> rsa.RSAPrivateKey:
    return _key(1408, "ca")


def issuer_key() -> rsa.RSAPrivateKey:
    return _key(1152, "issuer")


def icc_key() -> rsa.RSAPrivateKey:
    return _key(1024, "icc")


def ca_public_key() -> tuple[bytes, bytes, int, bytes]:
    """(RID, modulus, index, exponent): what a terminal holds for this test CA."""
    modulus, exponent = _n_bytes(ca_key())
    return RID, modulus, CA_INDEX, exponent


def issuer_certificate(issuer_id: bytes = bytes.fromhex("541333FF")) -> tuple[bytes, bytes]:
    """Issuer PK certificate '90' and remainder '92' (Book 2 §5.3 Table 6)."""
    n_ca = (ca_key().key_size + 7) // 8
    modulus, exponent = _n_bytes(issuer_key())
    room = n_ca - 36
    leftmost, remainder = modulus[:room], modulus[room:]
    leftmost += b"\xbb" * (room - len(leftmost))
    head = (
        b"\x02"
        + issuer_id
        + bytes.fromhex("1230")  # expiry MMYY
        + bytes.fromhex("000001")  # serial
        + b"\x01\x01"
        + bytes((len(modulus), len(exponent)))
    )
    digest = _sha1(head + leftmost + remainder + exponent)
    return rsa_sign_raw(ca_key(), b"\x6a" + head + leftmost + digest + b"\xbc"), remainder


def icc_certificate(static_data: bytes, pan: str = PAN) -> tuple[bytes, bytes]:
    """ICC PK certificate '9F46' and remainder '9F48' (Book 2 §6.4 Table 14)."""
    n_i = (issuer_key().key_size + 7) // 8
    modulus, exponent = _n_bytes(icc_key())
    room = n_i - 42
    leftmost, remainder = modulus[:room], modulus[room:]
    leftmost += b"\xbb" * (room - len(leftmost))
    pan_field = bytes.fromhex(pan + "F" * (20 - len(pan)))
    head = (
        b"\x04"
        + pan_field
        + bytes.fromhex("1230")
        + bytes.fromhex("000002")
        + b"\x01\x01"
        + bytes((len(modulus), len(exponent)))
    )
    digest = _sha1(head + leftmost + remainder + exponent + static_data)
    return rsa_sign_raw(issuer_key(), b"\x6a" + head + leftmost + digest + b"\xbc"), remainder


def signed_static_data(static_data: bytes, dac: bytes = b"\xda\xc1") -> bytes:
    """Signed static application data '93' (Book 2 §5.4 Table 7)."""
    n_i = (issuer_key().key_size + 7) // 8
    head = b"\x03\x01" + dac + b"\xbb" * (n_i - 26)
    return rsa_sign_raw(issuer_key(), b"\x6a" + head + _sha1(head + static_data) + b"\xbc")


def _flip(data: bytes) -> bytes:
    return data[:-1] + bytes((data[-1] ^ 0x01,))


@dataclass
class CardData:
    dgis: list[tuple[int, bytes]]
    mk_ac: bytes
    records: dict[int, bytes]
    static_data: bytes
    pin: str = PIN
    extra: dict[str, bytes] = field(default_factory=dict)


def _records(pan: str, oda: list[bytes], auc: bytes = b"\xff\x00") -> dict[int, bytes]:
    track2 = bytes.fromhex(pan + "D" + EXPIRY[:4] + "201" + "0000" + "123" + "F")  # iCVV 123
    app = (
        tlv(0x5A, bytes.fromhex(pan))
        + tlv(0x5F24, bytes.fromhex(EXPIRY))
        + tlv(0x5F25, bytes.fromhex("250101"))
        + tlv(0x5F34, bytes.fromhex(PSN))
        + tlv(0x5F28, bytes.fromhex("0826"))
        + tlv(0x9F07, auc)
        + tlv(0x8E, CVM_LIST)
        + tlv(0x9F0D, bytes.fromhex("BC50BC8800"))
        + tlv(0x9F0E, bytes(5))
        + tlv(0x9F0F, bytes.fromhex("BC70BC9800"))
        + tlv(0x8C, CDOL1)
        + tlv(0x8D, CDOL2)
        + tlv(0x9F08, bytes.fromhex("0002"))
        + tlv(0x9F4A, b"\x82")
    )
    issuer_cert, issuer_rem, ssad, icc_cert, icc_rem = oda
    icc_exp = _n_bytes(icc_key())[1]
    return {
        0x0101: tlv(0x70, tlv(0x57, track2) + tlv(0x5F20, b"DOE/JANE")),
        0x0201: tlv(0x70, app),
        0x0301: tlv(
            0x70,
            tlv(0x8F, bytes((CA_INDEX,)))
            + tlv(0x90, issuer_cert)
            + tlv(0x92, issuer_rem)
            + tlv(0x9F32, _n_bytes(issuer_key())[1]),
        ),
        0x0302: tlv(0x70, tlv(0x93, ssad)),
        0x0303: tlv(
            0x70,
            tlv(0x9F46, icc_cert)
            + tlv(0x9F47, icc_exp)
            + tlv(0x9F48, icc_rem)
            + tlv(0x9F49, bytes.fromhex("9F3704")),
        ),
    }


def _fci(pdol: bytes, label: bytes) -> bytes:
    return (
        tlv(0x50, label)
        + tlv(0x87, b"\x01")
        + tlv(0x9F38, pdol)
        + tlv(0x5F2D, b"en")
        + tlv(0x9F11, b"\x01")
        + tlv(0x9F12, b"BUREAU DEBIT")
    )


def build_card(
    cplc: bytes,
    kmc: bytes,
    *,
    pan: str = PAN,
    corrupt: Corruption = None,
    atc_limit: int = 0xFFFF,
    pin_tries: int = 3,
    upper_offline: int = 5,
) -> CardData:
    """Everything data preparation produces for one dual-interface card, in DGIs."""
    # Static data to be authenticated: the value of SFI 2 record 1 (AFL's ODA record), then AIP.
    placeholder = _records(pan, [b"", b"", b"", b"", b""])
    static_data = _template_value(placeholder[0x0201]) + AIP
    issuer_cert, issuer_rem = issuer_certificate()
    icc_cert, icc_rem = icc_certificate(static_data, pan)
    ssad = signed_static_data(static_data)
    if corrupt == "issuer_cert":
        issuer_cert = _flip(issuer_cert)
    elif corrupt == "icc_cert":
        icc_cert = _flip(icc_cert)
    elif corrupt == "ssad":
        ssad = _flip(ssad)
    auc = b"\xff\x80" if corrupt == "static_data" else b"\xff\x00"  # changed after signing
    records = _records(pan, [issuer_cert, issuer_rem, ssad, icc_cert, icc_rem], auc)
    k_dek = k_dek_of(kmc, cplc)
    mk_ac = kd.derive_icc_mk_a(IMK_AC, pan, PSN)
    keys = mk_ac + kd.derive_icc_mk_a(IMK_SMI, pan, PSN) + kd.derive_icc_mk_a(IMK_SMC, pan, PSN)
    pin_block = bytes.fromhex(f"2{len(PIN):X}{PIN}".ljust(16, "F"))
    signing_key = icc_key() if corrupt != "icc_key" else _key(1024, "someone else")
    der = signing_key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    gpo = tlv(0x82, AIP) + tlv(0x94, AFL)
    risk = (
        tlv(0x9F14, b"\x03")
        + tlv(0x9F23, bytes((upper_offline,)))
        + tlv(0xDF01, atc_limit.to_bytes(2, "big"))
        + tlv(0x9F10, bytes.fromhex("06010A03000000") + b"\x00")
    )
    dgis = [
        *sorted(records.items()),
        (0x9102, _fci(PDOL_CONTACT, b"BUREAU DEBIT")),
        (0x9103, _fci(PDOL_CONTACTLESS, b"BUREAU DEBIT CL")),
        (0x9104, gpo),
        (0x9105, gpo),
        (0x9010, bytes((pin_tries, pin_tries))),
        (0x0D01, risk),
        (0x8000, _aes_ecb(k_dek, keys)),
        (0x8010, _aes_ecb(k_dek, pin_block + b"\x80" + bytes(7))),
        (0x8201, aes_key_wrap_with_padding(k_dek, der)),
    ]
    return CardData(dgis, mk_ac, records, static_data)


def _template_value(record: bytes) -> bytes:
    """The value of a '70' template (Book 3 §10.3: tag and length excluded)."""
    length = record[1]
    if length < 0x80:
        return record[2:]
    size = length & 0x7F
    return record[2 + size :]
