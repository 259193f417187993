"""The EMV payment application of the virtual card: personalization, then terminal behaviour.

Implements the card side of docs/perso-protocol.md. Before personalization the application
accepts STORE DATA (EMV CPS, one DGI per command), only as handed over by the card manager from
an authenticated SCP03 session (vcard/gp.py), and DGI 8000 only from a session that encrypts
command data; after the last block it decrypts DGI 8000 under the card's K_DEK and answers
SELECT with its FCI, READ RECORD and GENERATE AC (ARQC).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from shared.iso7816 import (
    SW_CONDITIONS_NOT_SATISFIED,
    SW_INCORRECT_P1P2,
    SW_MEMORY_FAILURE,
    SW_RECORD_NOT_FOUND,
    SW_REFERENCED_DATA_NOT_FOUND,
    SW_SECURITY_STATUS_NOT_SATISFIED,
    SW_WRONG_DATA,
    SW_WRONG_LENGTH,
    CommandAPDU,
    ResponseAPDU,
    decode_dgis,
    decode_tlv,
    tlv,
)
from vcard.crypto import aes_ecb_decrypt, arqc
from vcard.store import CardState

log = logging.getLogger(__name__)

PAYMENT_AID: Final = bytes.fromhex("A0000000031010")
AIP: Final = bytes.fromhex("3800")  # Application Interchange Profile, fixed by the contract
CDOL1_LENGTH: Final = 29
DGI_SELECT_RESPONSE: Final = 0x9102
DGI_KEYS: Final = 0x8000
RECORD_DGIS: Final = frozenset({0x0101, 0x0102})
REQUIRED_DGIS: Final = frozenset({0x0101, 0x0102, DGI_SELECT_RESPONSE, DGI_KEYS})
KNOWN_DGIS: Final = REQUIRED_DGIS
CID_AAC: Final = 0x00
CID_ARQC: Final = 0x80


def _sw(sw: int) -> ResponseAPDU:
    return ResponseAPDU(b"", sw)


class PaymentApplication:
    """One applet instance bound to one card's persistent state."""

    def __init__(self, state: CardState, persist: Callable[[CardState], None]) -> None:
        self.state = state
        self._persist = persist
        self._next_block = 0

    @property
    def personalized(self) -> bool:
        return self.state.lifecycle == "personalized"

    def select(self) -> ResponseAPDU:
        """FCI `6F` (`84` DF name, `A5` proprietary template) per EMV 4.3 Book 1 §11.3.4."""
        self._next_block = 0  # a new STORE DATA sequence starts with every selection
        proprietary = b""
        if self.personalized:
            data = self.state.dgis.get(DGI_SELECT_RESPONSE, b"")
            # DGI 9102 carries the A5 contents (50, 87); accept a value already wrapped in A5.
            items = decode_tlv(data, recursive=False) if data else []
            wrapped = len(items) == 1 and items[0].tag == 0xA5
            proprietary = data if wrapped else tlv(0xA5, data)
        return ResponseAPDU(tlv(0x6F, tlv(0x84, PAYMENT_AID) + proprietary), 0x9000)

    # -- personalization (EMV CPS; GlobalPlatform 2.3.1 §11.11 STORE DATA) ------------------

    def begin_personalization(self) -> None:
        """INSTALL [for personalization] named this application: a STORE DATA sequence starts."""
        self._next_block = 0

    def store_data(self, cmd: CommandAPDU, *, encrypted: bool) -> ResponseAPDU:
        """One STORE DATA the card manager unwrapped; `encrypted`: its session is at C-DEC."""
        if self.personalized:
            return _sw(SW_CONDITIONS_NOT_SATISFIED)  # the perso phase is closed for good
        # P1 b5-b4 = 01 (DGI format) is the only structure this applet takes; b3-b1 are RFU.
        if cmd.p1 & 0x18 != 0x08 or cmd.p1 & 0x07:
            return _sw(SW_INCORRECT_P1P2)
        failure_at = self.state.memory_failure_at_block
        if failure_at is not None and (cmd.p2 >= failure_at or self._next_block >= failure_at):
            # Injected defect: the NVM write fails (ISO 7816-4 6581), now and for every later
            # block of this card.
            return _sw(SW_MEMORY_FAILURE)
        if cmd.p2 != self._next_block:
            log.info("STORE DATA block %02X out of sequence (want %02X)", cmd.p2, self._next_block)
            return _sw(SW_INCORRECT_P1P2)
        if not cmd.data:
            return _sw(SW_WRONG_LENGTH)
        try:
            dgis = decode_dgis(cmd.data)
        except ValueError:
            return _sw(SW_WRONG_DATA)
        if not encrypted and any(tag == DGI_KEYS for tag, _ in dgis):
            return _sw(SW_SECURITY_STATUS_NOT_SATISFIED)  # keys travel under C-DECRYPTION only
        for tag, value in dgis:
            status = self._check_dgi(tag, value)
            if status is not None:
                return _sw(status)
        for tag, value in dgis:
            self.state.dgis[tag] = value
        self._next_block += 1
        if cmd.p1 & 0x80:
            return self._finish_personalization()
        self._persist(self.state)
        return _sw(0x9000)

    @staticmethod
    def _check_dgi(tag: int, value: bytes) -> int | None:
        if tag not in KNOWN_DGIS:
            return SW_REFERENCED_DATA_NOT_FOUND  # EMV CPS: DGI not recognised
        if tag == DGI_KEYS:
            return None if len(value) == 48 else SW_WRONG_DATA
        try:
            items = decode_tlv(value)
        except ValueError:
            return SW_WRONG_DATA
        if tag in RECORD_DGIS and (len(items) != 1 or items[0].tag != 0x70):
            return SW_WRONG_DATA  # a record DGI is exactly one `70` template
        return None

    def _finish_personalization(self) -> ResponseAPDU:
        missing = REQUIRED_DGIS - self.state.dgis.keys()
        if missing:
            log.info("last STORE DATA but DGIs missing: %s", sorted(f"{m:04X}" for m in missing))
            self._persist(self.state)
            return _sw(SW_CONDITIONS_NOT_SATISFIED)
        clear = aes_ecb_decrypt(self.state.k_dek, self.state.dgis[DGI_KEYS])
        self.state.mk_ac = clear[:16]
        self.state.mk_smi = clear[16:32]
        self.state.mk_smc = clear[32:48]
        # The card keeps the keys, not the ciphertext: DGI 8000 is consumed on decryption.
        del self.state.dgis[DGI_KEYS]
        self.state.lifecycle = "personalized"
        self._persist(self.state)
        log.info("card %s personalized", self.state.chip_serial)
        return _sw(0x9000)

    # -- terminal behaviour (EMV 4.3 Book 3 §6.5) ----------------------------------------------

    def read_record(self, cmd: CommandAPDU) -> ResponseAPDU:
        """READ RECORD, P1 record number, P2 = SFI << 3 | 100 (Book 3 §6.5.11)."""
        if cmd.data:
            return _sw(SW_WRONG_LENGTH)
        if cmd.p2 & 0x07 != 0x04 or cmd.p1 == 0:
            return _sw(SW_INCORRECT_P1P2)
        if not self.personalized:
            return _sw(SW_CONDITIONS_NOT_SATISFIED)
        sfi = cmd.p2 >> 3
        record = self.state.dgis.get((sfi << 8) | cmd.p1) if 1 <= sfi <= 30 else None
        if record is None:
            has_sfi = any(tag >> 8 == sfi for tag in self.state.dgis if tag in RECORD_DGIS)
            return _sw(SW_RECORD_NOT_FOUND if has_sfi else 0x6A82)
        return ResponseAPDU(record, 0x9000)

    def generate_ac(self, cmd: CommandAPDU) -> ResponseAPDU:
        """GENERATE AC (Book 3 §6.5.5), response format 1 (`80`), no CDA."""
        if not self.personalized or self.state.mk_ac is None:
            return _sw(SW_CONDITIONS_NOT_SATISFIED)
        requested = cmd.p1 & 0xC0
        if requested == 0xC0 or cmd.p1 & 0x3F or cmd.p2 != 0:
            return _sw(SW_INCORRECT_P1P2)  # C0 is RFU; CDA (b5) and the rest unsupported
        if len(cmd.data) != CDOL1_LENGTH:
            return _sw(SW_WRONG_LENGTH)
        if self.state.atc >= 0xFFFF:
            return _sw(SW_CONDITIONS_NOT_SATISFIED)  # ATC exhausted: the application is blocked
        # Card risk management of this test card: a TC request goes online (ARQC); AAC stays AAC.
        cid = CID_AAC if requested == 0x00 else CID_ARQC
        self.state.atc += 1
        # The ATC is committed before the cryptogram leaves the card, so it never repeats.
        self._persist(self.state)
        atc = self.state.atc
        cryptogram = arqc(self.state.mk_ac, atc, cmd.data, AIP)
        body = bytes((cid,)) + atc.to_bytes(2, "big") + cryptogram
        return ResponseAPDU(tlv(0x80, body), 0x9000)

    def get_data(self, tag: int) -> bytes | None:
        """GET DATA objects of the application (Book 3 §6.5.7): the ATC."""
        if tag == 0x9F36:
            return tlv(0x9F36, self.state.atc.to_bytes(2, "big"))
        return None
