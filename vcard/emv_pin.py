"""Offline plaintext PIN (EMV 4.3 Book 3 §6.5.12 VERIFY; ISO 9564-1 format 2 PIN block).

DGI 8010 carries the PIN block || 80 00 00 00 00 00 00 00 encrypted under K_DEK (AES-ECB);
DGI 9010 carries the PIN try limit and the PIN try counter. The card compares the terminal's
plaintext PIN block with its own in constant time; the counter is decremented and written to
the NVM before the comparison, so pulling the card mid-command cannot buy a free try.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Final

from shared.iso7816 import (
    SW_CONDITIONS_NOT_SATISFIED,
    SW_INCORRECT_P1P2,
    SW_WRONG_LENGTH,
    CommandAPDU,
    ResponseAPDU,
)
from vcard.crypto import aes_ecb_decrypt
from vcard.emv_session import CVR2_PIN_BLOCKED, CVR2_PIN_FAILED, CVR2_PIN_PERFORMED, Session
from vcard.store import CardState

P2_PLAINTEXT_PIN: Final = 0x80
SW_PIN_BLOCKED: Final = 0x6983  # authentication method blocked
PIN_BLOCK_TAIL: Final = b"\x80" + bytes(7)


def valid_pin_block(block: bytes) -> bool:
    """Format 2: '2' || N (4..12) || N PIN digits || 'F' filler to 16 nibbles."""
    if len(block) != 8:
        return False
    nibbles = block.hex().upper()
    count = int(nibbles[1], 16)
    digits, filler = nibbles[2 : 2 + count], nibbles[2 + count :]
    return (
        nibbles[0] == "2" and 4 <= count <= 12 and digits.isdigit() and filler == "F" * len(filler)
    )


def decrypt_pin_dgi(k_dek: bytes, value: bytes) -> bytes:
    """DGI 8010 -> the 8-byte PIN block; ValueError names what is wrong."""
    if len(value) != 16:
        raise ValueError("DGI 8010 is not 16 bytes")
    clear = aes_ecb_decrypt(k_dek, value)
    if clear[8:] != PIN_BLOCK_TAIL or not valid_pin_block(clear[:8]):
        raise ValueError("DGI 8010 does not decrypt to a format 2 PIN block")
    return clear[:8]


def pin_counters(value: bytes) -> tuple[int, int]:
    """DGI 9010: PIN try limit, PIN try counter."""
    if len(value) != 2 or not 1 <= value[0] <= 15 or value[1] > value[0]:
        raise ValueError("DGI 9010 is not limit (1..15) || counter (<= limit)")
    return value[0], value[1]


def verify(
    state: CardState, session: Session, cmd: CommandAPDU, persist: Callable[[CardState], None]
) -> ResponseAPDU:
    if cmd.p1 != 0x00 or cmd.p2 != P2_PLAINTEXT_PIN:
        return ResponseAPDU(b"", SW_INCORRECT_P1P2)  # only plaintext offline PIN
    if len(cmd.data) != 8:
        return ResponseAPDU(b"", SW_WRONG_LENGTH)
    if state.pin_block is None:
        return ResponseAPDU(b"", SW_CONDITIONS_NOT_SATISFIED)
    session.flag(1, CVR2_PIN_PERFORMED)
    if state.pin_tries == 0:
        session.flag(1, CVR2_PIN_BLOCKED | CVR2_PIN_FAILED)
        return ResponseAPDU(b"", SW_PIN_BLOCKED)  # no comparison once blocked
    state.pin_tries -= 1
    persist(state)
    if hmac.compare_digest(cmd.data, state.pin_block):
        state.pin_tries = state.pin_try_limit
        persist(state)
        session.cvr[1] &= ~CVR2_PIN_FAILED & 0xFF
        return ResponseAPDU(b"", 0x9000)
    session.flag(1, CVR2_PIN_FAILED | (CVR2_PIN_BLOCKED if state.pin_tries == 0 else 0))
    return ResponseAPDU(b"", 0x63C0 | state.pin_tries)
