"""The payment application's volatile state: what the current card session selected and did.

A reset, a power cycle or a new SELECT clears it; nothing here reaches the NVM (vcard/store.py).
The CVR bits it collects are documented in docs/perso-protocol.md ("Card verification results").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from vcard.emv_data import Interface

Selected = Literal["pse", "ppse", "app"]

# CVR byte 1
CVR1_SECOND_AAC: Final = 0x00
CVR1_SECOND_TC: Final = 0x40
CVR1_SECOND_NOT_REQUESTED: Final = 0x80
CVR1_FIRST_TC: Final = 0x10
CVR1_FIRST_ARQC: Final = 0x20
CVR1_CDA: Final = 0x08
CVR1_DDA: Final = 0x04
# CVR byte 2
CVR2_PIN_PERFORMED: Final = 0x80
CVR2_PIN_FAILED: Final = 0x40
CVR2_PIN_BLOCKED: Final = 0x20
CVR2_LAST_ONLINE_INCOMPLETE: Final = 0x10
CVR2_LOWER_OFFLINE_EXCEEDED: Final = 0x08
CVR2_UPPER_OFFLINE_EXCEEDED: Final = 0x04


@dataclass
class Session:
    selected: Selected | None = None
    contactless: bool = False  # PPSE was selected in this card session
    interface: Interface | None = None  # set by GET PROCESSING OPTIONS
    pdol_data: bytes = b""
    cdol1_data: bytes = b""
    first_cid: int | None = None
    second_done: bool = False
    cvr: list[int] = field(default_factory=lambda: [CVR1_SECOND_NOT_REQUESTED, 0, 0])

    def new_selection(self, selected: Selected | None) -> None:
        """SELECT starts a new transaction; the interface seen (PPSE) survives it."""
        self.selected = selected
        self.interface = None
        self.pdol_data = b""
        self.cdol1_data = b""
        self.first_cid = None
        self.second_done = False
        self.cvr = [CVR1_SECOND_NOT_REQUESTED, 0, 0]

    def flag(self, byte: int, bits: int) -> None:
        self.cvr[byte] |= bits
