"""EMV per-card keys and ARQC verification, computed inside the HSM (HSM-worker functions).

- ICC master keys MK-AC/MK-SMI/MK-SMC: EMV 4.3 Book 2 Annex A1.4 (Option A, A1.4.1; Option B,
  A1.4.2) derived with CKM_DES3_ECB_ENCRYPT_DATA from the issuer's IMK objects.
  Parity: SoftHSM 2.6.1 sets odd parity on every DES key it derives (measured: the derived
  MK equals pyemv's parity-adjusted key, not the raw 3DES output), as A1.4.1 asks.
- Session key: EMV common session key, Book 2 A1.3.1.
- ARQC: Book 2 A1.2 / 8.1.2 MAC = ISO/IEC 9797-1 MAC algorithm 3 with padding method 2, over
  the data of docs/perso-protocol.md (CDOL1 data || AIP || ATC).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pkcs11 import Attribute, Mechanism, MechanismFlag

from services.keymgmt.hsm.derive import des3_derive
from services.keymgmt.hsm.p11 import SymKey, encrypt
from services.keymgmt.hsm.session import Hsm, key_label

AIP = bytes.fromhex("3800")  # application interchange profile of our EMV application
CDOL1_LEN = 29
ATC_LEN = 2


class MkDerivation(StrEnum):
    OPTION_A = "EMV-BOOK2-A1.4.1-OPTION-A"
    OPTION_B = "EMV-BOOK2-A1.4.2-OPTION-B"


@dataclass(frozen=True)
class ImkLabels:
    """Labels of an issuer's three issuer master keys (DES2 token objects, derive only)."""

    ac: str
    smi: str
    smc: str

    @classmethod
    def for_issuer(cls, issuer: str, version: int = 1) -> ImkLabels:
        return cls(
            key_label(issuer, "IMK-AC", version),
            key_label(issuer, "IMK-SMI", version),
            key_label(issuer, "IMK-SMC", version),
        )


def _check_digits(name: str, value: str, lengths: range) -> None:
    if not value.isdigit() or len(value) not in lengths:
        raise ValueError(f"{name} must be {lengths.start}-{lengths.stop - 1} digits")


def option_a_y(pan: str, psn: str = "00") -> bytes:
    """Book 2 A1.4.1: Y = rightmost 16 digits of PAN || PSN (left-padded with 0), as BCD."""
    _check_digits("PAN", pan, range(12, 20))
    _check_digits("PSN", psn, range(2, 3))
    return bytes.fromhex((pan + psn)[-16:].rjust(16, "0"))


def option_b_y(pan: str, psn: str = "00") -> bytes:
    """Book 2 A1.4.2: for PANs over 16 digits, Y = 16 decimalised digits of SHA-1(PAN||PSN)."""
    _check_digits("PAN", pan, range(12, 20))
    _check_digits("PSN", psn, range(2, 3))
    if len(pan) <= 16:
        return option_a_y(pan, psn)
    digits = pan + psn
    digest = hashlib.sha1(bytes.fromhex(digits.rjust(len(digits) + len(digits) % 2, "0")))
    hex_digest = digest.hexdigest()
    y = [c for c in hex_digest if c.isdigit()][:16]
    if len(y) < 16:  # decimalise a-f as 0-5 for the missing digits
        y += [str(int(c, 16) - 10) for c in hex_digest if not c.isdigit()][: 16 - len(y)]
    return bytes.fromhex("".join(y))


def mk_derivation_data(pan: str, psn: str, option: MkDerivation = MkDerivation.OPTION_A) -> bytes:
    """16 bytes Y || (Y xor FF..FF): encrypting both halves yields the double-length MK."""
    y = option_a_y(pan, psn) if option is MkDerivation.OPTION_A else option_b_y(pan, psn)
    return y + bytes(b ^ 0xFF for b in y)


def derive_icc_mk(
    hsm: Hsm,
    imk_label: str,
    pan: str,
    psn: str = "00",
    option: MkDerivation = MkDerivation.OPTION_A,
    caps: MechanismFlag = MechanismFlag.DERIVE,
    extra: dict[Attribute, Any] | None = None,
) -> SymKey:
    """Per-card master key as a sensitive session object; the caller destroys it."""
    return des3_derive(hsm.key(imk_label), mk_derivation_data(pan, psn, option), caps, extra)


def pad_iso9797_m2(data: bytes) -> bytes:
    """ISO/IEC 9797-1 padding method 2: append 80, then 00 to a multiple of 8 bytes."""
    padded = data + b"\x80"
    return padded + bytes(-len(padded) % 8)


def retail_mac(sk: SymKey, sk_left: SymKey, data: bytes) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3, padding method 2, computed in the HSM.

    Single-DES CBC (zero IV) under the left key half over all blocks but the last, then the
    last block xor that chain is enciphered with 3DES (E_L D_R E_L) under the whole key.
    Single DES needs OpenSSL's legacy provider (OPENSSL_CONF) in SoftHSM's process.
    """
    padded = pad_iso9797_m2(data)
    chain = bytes(8)
    if len(padded) > 8:
        chain = encrypt(sk_left, padded[:-8], Mechanism._DES_CBC, chain)[-8:]
    last = bytes(a ^ b for a, b in zip(padded[-8:], chain, strict=True))
    return encrypt(sk, last, Mechanism.DES3_ECB)


def arqc_input(cdol1: bytes, atc: bytes, aip: bytes = AIP) -> bytes:
    """docs/perso-protocol.md: the ARQC covers CDOL1 data (29 bytes) || AIP || ATC."""
    if len(cdol1) != CDOL1_LEN or len(atc) != ATC_LEN or len(aip) != 2:
        raise ValueError("CDOL1 data is 29 bytes, ATC and AIP 2 bytes each")
    return cdol1 + aip + atc


def generate_arqc(
    hsm: Hsm,
    imk_ac_label: str,
    pan: str,
    psn: str,
    atc: bytes,
    cdol1: bytes,
    aip: bytes = AIP,
    option: MkDerivation = MkDerivation.OPTION_A,
) -> bytes:
    """The ARQC the card must return; MK-AC, SK and SK's left half live only as session objects."""
    data = arqc_input(cdol1, atc, aip)
    mk = derive_icc_mk(hsm, imk_ac_label, pan, psn, option)
    created = [mk]
    try:
        # Book 2 A1.3.1: SK = 3DES(MK)[ATC||F0||00*5] || 3DES(MK)[ATC||0F||00*5]
        left = atc + b"\xf0" + bytes(5)
        right = atc + b"\x0f" + bytes(5)
        sk = des3_derive(mk, left + right, MechanismFlag.ENCRYPT)
        created.append(sk)
        # The left half alone, as a single-DES key object, for the CBC part of the retail MAC.
        sk_left = des3_derive(mk, left, MechanismFlag.ENCRYPT)
        created.append(sk_left)
        return retail_mac(sk, sk_left, data)
    finally:
        for obj in created:
            obj.destroy()


def verify_arqc(
    hsm: Hsm,
    imk_ac_label: str,
    pan: str,
    psn: str,
    atc: bytes,
    cdol1: bytes,
    arqc: bytes,
    aip: bytes = AIP,
    option: MkDerivation = MkDerivation.OPTION_A,
) -> bool:
    expected = generate_arqc(hsm, imk_ac_label, pan, psn, atc, cdol1, aip, option)
    return hmac.compare_digest(expected, arqc)


async def averify_arqc(
    hsm: Hsm,
    imk_ac_label: str,
    pan: str,
    psn: str,
    atc: bytes,
    cdol1: bytes,
    arqc: bytes,
    aip: bytes = AIP,
    option: MkDerivation = MkDerivation.OPTION_A,
) -> bool:
    return await hsm.call(verify_arqc, imk_ac_label, pan, psn, atc, cdol1, arqc, aip, option)
