"""The terminal's command APDUs (EMV 4.3 Book 3 §6.5; Book 1 §11-12) and the transport rules
a terminal applies to responses (Book 1 §9.3: 61xx GET RESPONSE, 6Cxx resend with Le)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from shared.iso7816 import sw_hex

Transmit = Callable[[bytes], Awaitable[tuple[bytes, int]]]
SW_OK: Final = 0x9000
PSE: Final = b"1PAY.SYS.DDF01"
PPSE: Final = b"2PAY.SYS.DDF01"


class KernelFailure(Exception):
    """The transaction failed at `step`; the reason names what (never card data)."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


def select(name: bytes, *, next_occurrence: bool = False) -> bytes:
    return bytes((0x00, 0xA4, 0x04, 0x02 if next_occurrence else 0x00, len(name))) + name + b"\0"


def read_record(sfi: int, record: int) -> bytes:
    return bytes((0x00, 0xB2, record, (sfi << 3) | 0x04, 0x00))


def gpo(pdol_data: bytes) -> bytes:
    body = bytes((0x83, len(pdol_data))) + pdol_data
    return bytes((0x80, 0xA8, 0x00, 0x00, len(body))) + body + b"\0"


def get_data(tag: int) -> bytes:
    return bytes((0x80, 0xCA, tag >> 8, tag & 0xFF, 0x00))


def verify_plaintext(pin: str) -> bytes:
    """VERIFY with a plaintext PIN block, ISO 9564 format 2 ('2' N digits, F filler)."""
    if not pin.isdigit() or not 4 <= len(pin) <= 12:
        raise ValueError("a PIN is 4 to 12 digits")
    block = bytes.fromhex(f"2{len(pin):X}{pin}".ljust(16, "F"))
    return bytes.fromhex("0020008008") + block


def internal_authenticate(ddol_data: bytes) -> bytes:
    return bytes((0x00, 0x88, 0x00, 0x00, len(ddol_data))) + ddol_data + b"\0"


def generate_ac(p1: int, cdol_data: bytes) -> bytes:
    return bytes((0x80, 0xAE, p1, 0x00, len(cdol_data))) + cdol_data + b"\0"


async def exchange(transmit: Transmit, apdu: bytes, step: str) -> tuple[bytes, int]:
    """One command with the transport rules applied: 6Cxx resends with Le = xx, 61xx fetches
    the rest with GET RESPONSE (T=0)."""
    data, sw = await transmit(apdu)
    if sw >> 8 == 0x6C:
        data, sw = await transmit(apdu[:-1] + bytes((sw & 0xFF,)))
    collected = data
    while sw >> 8 == 0x61:
        data, sw = await transmit(bytes((0x00, 0xC0, 0x00, 0x00, sw & 0xFF)))
        collected += data
    return collected, sw


async def command(transmit: Transmit, apdu: bytes, step: str) -> bytes:
    """A command that must answer 9000."""
    data, sw = await exchange(transmit, apdu, step)
    if sw != SW_OK:
        raise KernelFailure(step, f"card answered {sw_hex(sw)} to {apdu[:4].hex().upper()}")
    return data
