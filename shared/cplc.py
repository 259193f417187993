"""The chip's identity from its CPLC (Card Production Life Cycle data, GlobalPlatform Card
Specification: GET DATA tag 9F7F), as the station, QA and keymgmt read it; the virtual card
lays it out on its side (vcard/store.py), independently of host code.

CPLC is 42 bytes: IC fabricator (2) || IC type (2) || ... || IC serial number at [12:16] ||
IC batch identifier at [16:18] || ... (docs/perso-protocol.md, Card identity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

GET_CPLC: Final = bytes.fromhex("80CA9F7F00")  # GET DATA, tag 9F7F (GlobalPlatform CPLC)
CPLC_TAG: Final = bytes.fromhex("9F7F")
CPLC_LENGTH: Final = 42


class CplcError(ValueError):
    """Bytes that are not a CPLC (or not a GET DATA 9F7F answer carrying one)."""


@dataclass(frozen=True)
class ChipIdentity:
    """From the CPLC (docs/perso-protocol.md, Card identity)."""

    chip_serial: str  # CPLC[12:18] upper-case hex: IC serial || IC batch id
    diversification_data: bytes  # CPLC[0:2] || CPLC[2:4] || CPLC[12:18], as INITIALIZE UPDATE


def chip_identity(cplc: bytes) -> ChipIdentity:
    """The identity in the 42 CPLC bytes themselves."""
    if len(cplc) != CPLC_LENGTH:
        raise CplcError(f"CPLC is {CPLC_LENGTH} bytes, not {len(cplc)}")
    return ChipIdentity(cplc[12:18].hex().upper(), cplc[0:4] + cplc[12:18])


def chip_identity_from_get_data(data: bytes) -> ChipIdentity:
    """The identity in a GET DATA 9F7F answer: `9F7F 2A` + 42 bytes CPLC (status word checked
    by the caller, which names its own error)."""
    if len(data) != 3 + CPLC_LENGTH or data[:2] != CPLC_TAG or data[2] != CPLC_LENGTH:
        raise CplcError(f"CPLC answer is not 9F7F 2A + 42 bytes ({len(data)} bytes)")
    return chip_identity(data[3:])
