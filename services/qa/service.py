"""QA domain logic, no I/O: the chip identity check, the terminal's transaction parameters and
the QA failure. The EMV transaction itself is QA's terminal kernel (services/qa/emv/, run by
emv_check.py); the print-image check is in print_check.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from shared.cplc import GET_CPLC as GET_CPLC  # re-exported: QA's terminal APDUs live here
from shared.cplc import CplcError, chip_identity_from_get_data
from shared.iso7816 import SW_OK, sw_hex

CHECK_PRINT_IMAGE: Final = "print-image"


class QaFailure(Exception):
    """The card fails QA; the reason names the check and carries no card data."""


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


@dataclass(frozen=True)
class Transaction:
    """The test transaction QA's terminal kernel runs: amount (minor units), terminal country
    (ISO 3166 numeric) and currency (ISO 4217 numeric), 4 digits each as Book 3 codes them."""

    amount_minor: int = 100
    terminal_country: str = "0826"
    currency: str = "0826"

    def __post_init__(self) -> None:
        if not 0 <= self.amount_minor < 10**12:
            raise ValueError("the amount does not fit n12 (Amount, Authorised '9F02')")
        for name in ("terminal_country", "currency"):
            value = getattr(self, name)
            if len(value) != 4 or not value.isdigit():
                raise ValueError(f"{name} is 4 digits (n3 in 2 bytes of BCD)")
