"""QA domain logic, no I/O: the terminal APDUs of docs/perso-protocol.md, CDOL1 building and
the GENERATE AC answer. The print-image check is in print_check.py."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date
from typing import Final

from shared.cplc import GET_CPLC as GET_CPLC  # re-exported: QA's terminal APDUs live here
from shared.cplc import CplcError, chip_identity_from_get_data
from shared.iso7816 import SW_OK, sw_hex

AID: Final = bytes.fromhex("A0000000031010")
SELECT_AID: Final = bytes((0x00, 0xA4, 0x04, 0x00, len(AID))) + AID + b"\x00"
CDOL1_LENGTH: Final = 29
CID_ARQC: Final = 0x80
TX_TYPE_PURCHASE: Final = 0x00  # ISO 8583 processing code, first two digits: goods and services

CHECK_PRINT_IMAGE: Final = "print-image"
CHECK_CHIP_READBACK: Final = "chip-readback"
CHECK_ARQC: Final = "arqc"


class QaFailure(Exception):
    """The card fails QA; the reason names the check and carries no card data."""


def read_record(record: int, sfi: int = 1) -> bytes:
    """READ RECORD (EMV Book 3 §6.5.11): P1 record number, P2 = SFI << 3 | 100."""
    return bytes((0x00, 0xB2, record, (sfi << 3) | 0x04, 0x00))


def require_ok(what: str, apdu: bytes, sw: int) -> None:
    if sw != SW_OK:
        raise QaFailure(f"card answered {sw_hex(sw)} to {what} ({apdu[:4].hex().upper()})")


def chip_serial_from_cplc(data: bytes, sw: int) -> str:
    """GET DATA 9F7F answers `9F7F 2A` + 42 bytes; the serial is CPLC[12:18] (shared/cplc.py)."""
    require_ok("GET DATA CPLC", GET_CPLC, sw)
    try:
        return chip_identity_from_get_data(data).chip_serial
    except CplcError as exc:
        raise QaFailure(f"the chip's {exc}") from exc


def _bcd(value: int, digits: int) -> bytes:
    if value < 0 or len(str(value)) > digits:
        raise ValueError(f"{value} does not fit {digits} BCD digits")
    return bytes.fromhex(f"{value:0{digits}d}")


@dataclass(frozen=True)
class Transaction:
    """The test transaction QA asks the chip to authorise online."""

    amount_minor: int = 100
    terminal_country: str = "0826"
    currency: str = "0826"
    day: date | None = None  # default today

    def cdol1(self, unpredictable_number: bytes) -> bytes:
        """CDOL1 data (docs/perso-protocol.md, 29 bytes): amount authorised n12 (6) || amount
        other n12 (6) || terminal country n3 (2) || TVR (5) || currency n3 (2) || date YYMMDD
        (3) || transaction type n2 (1) || unpredictable number (4)."""
        if len(unpredictable_number) != 4:
            raise ValueError("the unpredictable number is 4 bytes")
        day = self.day or date.today()
        data = (
            _bcd(self.amount_minor, 12)
            + _bcd(0, 12)
            + bytes.fromhex(self.terminal_country)
            + bytes(5)  # TVR: every terminal check passed
            + bytes.fromhex(self.currency)
            + _bcd(day.year % 100 * 10000 + day.month * 100 + day.day, 6)
            + bytes((TX_TYPE_PURCHASE,))
            + unpredictable_number
        )
        assert len(data) == CDOL1_LENGTH
        return data


def unpredictable_number() -> bytes:
    """EMV Book 4 §6.5.6: unpredictable, so a chip cannot replay an earlier cryptogram."""
    return secrets.token_bytes(4)


def generate_ac(cdol1: bytes) -> bytes:
    """GENERATE AC requesting an ARQC (P1 80), response format 1 (EMV Book 3 §6.5.5)."""
    if len(cdol1) != CDOL1_LENGTH:
        raise ValueError("CDOL1 data is 29 bytes")
    return bytes((0x80, 0xAE, 0x80, 0x00, CDOL1_LENGTH)) + cdol1 + b"\x00"


@dataclass(frozen=True)
class Cryptogram:
    cid: int
    atc: bytes
    arqc: bytes


def parse_generate_ac(data: bytes) -> Cryptogram:
    """Format 1: `80 0B` || CID || ATC (2) || cryptogram (8)."""
    if len(data) != 13 or data[:2] != b"\x80\x0b":
        raise QaFailure("GENERATE AC answer is not format 1 (80 0B, 11 bytes)")
    if data[2] != CID_ARQC:
        raise QaFailure(f"the chip answered cryptogram type {data[2]:02X}, not an ARQC (80)")
    return Cryptogram(data[2], data[3:5], data[5:13])
