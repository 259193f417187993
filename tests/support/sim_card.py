"""A SIM personalised on a virtual card without keymgmt, for the unit tests: the DGIs of
docs/perso-protocol.md ("SIM products") with public test values, the secrets under the card's
K-DEK as keymgmt would send them, installed by the independent SCP03 host."""

from __future__ import annotations

from tests.support.uicc_client import pin_block
from tests.support.vcard import under_kdek, under_kdek_cbc
from vcard.card import VirtualCard

ICCID, IMSI = "8949001234567890123", "001010123456789"
PIN1, PUK1, PIN2, PUK2, ADM1 = "1234", "12345678", "5678", "87654321", "31415926"
AID = bytes.fromhex("A0000000871002FFFFFFFF8907090000")
SPN = bytes((0x01,)) + b"Bureau Mobile".ljust(16, b"\xff")
Sim = tuple[VirtualCard, bytes, bytes]
FPLMN = bytes.fromhex("00F110") + b"\xff" * 9  # 001-01 forbidden, three free entries


def _swapped(digits: str, length: int) -> bytes:
    padded = digits.ljust(2 * length, "F")
    return bytes(int(padded[i + 1] + padded[i], 16) for i in range(0, 2 * length, 2))


def sim_dgis(
    card: VirtualCard, ki: bytes, opc: bytes, pin1_enabled: bool = True
) -> list[tuple[int, bytes]]:
    pins = b"".join(pin_block(p) for p in (PIN1, PUK1, PIN2, PUK2, ADM1))
    flags = bytes((1 if pin1_enabled else 0,)) + bytes(7)
    ef_imsi = bytes((8,)) + _swapped("9" + IMSI, 8)
    return [
        (0x0201, _swapped(ICCID, 10)),
        (0x0202, ef_imsi),
        (0x0203, bytes.fromhex("00000002")),
        (0x0204, SPN),
        (0x0206, FPLMN),
        (0x8101, under_kdek(card, ki) + under_kdek(card, opc)),
        (0x8102, under_kdek_cbc(card, pins + flags)),
    ]
