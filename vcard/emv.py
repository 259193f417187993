"""The EMV payment application of the virtual card: personalization, then terminal behaviour.

Implements the card side of docs/perso-protocol.md. Before personalization the application
accepts STORE DATA (EMV CPS, one DGI per command), only as handed over by the card manager from
an authenticated SCP03 session (vcard/gp.py), and the sensitive DGIs (8000 keys, 8010 PIN, 8201
ICC private key) only from a session that encrypts command data; after the last block it
decrypts them under the card's K_DEK and behaves toward a terminal as EMV 4.3 Books 1-3 say:
PSE/PPSE and application selection (vcard/emv_select.py), GET PROCESSING OPTIONS, READ RECORD,
GET DATA, VERIFY (vcard/emv_pin.py), INTERNAL AUTHENTICATE and GENERATE AC with CDA
(vcard/emv_txn.py, vcard/emv_oda.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from shared.iso7816 import (
    SW_CONDITIONS_NOT_SATISFIED,
    SW_FILE_NOT_FOUND,
    SW_INCORRECT_P1P2,
    SW_INS_NOT_SUPPORTED,
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
from vcard.crypto import aes_ecb_decrypt
from vcard.emv_data import (
    DGI_ICC_KEY,
    DGI_KEYS,
    DGI_PIN,
    DGI_PIN_COUNTERS,
    ENCRYPTED_DGIS,
    FIXED_DGIS,
    Profile,
    is_record_dgi,
    missing_dgis,
    profile,
)
from vcard.emv_oda import unwrap_icc_key
from vcard.emv_pin import decrypt_pin_dgi, pin_counters, verify
from vcard.emv_select import (
    PPSE_NAME,
    PSE_DIRECTORY_SFI,
    PSE_NAME,
    application_fci,
    ppse_fci,
    pse_fci,
    pse_record,
)
from vcard.emv_session import Session
from vcard.emv_txn import generate_ac, get_processing_options, internal_authenticate
from vcard.store import CardState

log = logging.getLogger(__name__)

PAYMENT_AID: Final = bytes.fromhex("A0000000031010")
NAMES: Final = frozenset({PAYMENT_AID, PSE_NAME, PPSE_NAME})
SW_FUNCTION_NOT_SUPPORTED_P1P2: Final = 0x6A86


def split_dgis(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The whole DGIs of `data` and the start of one that goes on in the next STORE DATA.

    A DGI longer than one short command (the ICC private key, DGI 8201) spans several STORE
    DATA commands, as GlobalPlatform 2.3.1 §11.11.2 lets the data of one structure do; each
    command still carries data of one DGI only (docs/perso-protocol.md)."""
    if len(data) < 3:
        return [], data
    length, header = data[2], 3
    if length == 0xFF:
        if len(data) < 5:
            return [], data
        length, header = int.from_bytes(data[3:5], "big"), 5
    if len(data) < header + length:
        return [], data
    return decode_dgis(data), b""


def _sw(sw: int) -> ResponseAPDU:
    return ResponseAPDU(b"", sw)


class PaymentApplication:
    """One applet instance bound to one card's persistent state."""

    def __init__(self, state: CardState, persist: Callable[[CardState], None]) -> None:
        self.state = state
        self._persist = persist
        self._next_block = 0
        self._partial = b""  # a DGI continued in the next STORE DATA
        self.session = Session()
        self._profile: Profile | None = None

    @property
    def personalized(self) -> bool:
        return self.state.lifecycle == "personalized"

    @property
    def profile(self) -> Profile | None:
        if self._profile is None and self.personalized:
            self._profile = profile(self.state.dgis)
        return self._profile

    def reset_session(self) -> None:
        """Reset or power cycle: no selection, no transaction, no interface seen."""
        self.session = Session()

    # -- selection (Book 1 §11.3, §12) ----------------------------------------------------------

    def select(self, name: bytes = PAYMENT_AID, p2: int = 0x00) -> ResponseAPDU:
        """SELECT by DF name: the PSE, the PPSE or the application (P2 00 first, 02 next)."""
        self._next_block = 0  # a new STORE DATA sequence starts with every selection
        self._partial = b""
        if name == PAYMENT_AID and not self.personalized:
            self.session.new_selection("app")
            return ResponseAPDU(tlv(0x6F, tlv(0x84, PAYMENT_AID)), 0x9000)
        prof = self.profile
        if prof is None or p2 & 0x02:
            return _sw(SW_FILE_NOT_FOUND)  # one application: no next occurrence
        if name == PSE_NAME:
            self.session.new_selection("pse")
            return ResponseAPDU(pse_fci(), 0x9000)
        if name == PPSE_NAME:
            if prof.contactless is None:
                return _sw(SW_FILE_NOT_FOUND)
            self.session.new_selection("ppse")
            self.session.contactless = True
            return ResponseAPDU(ppse_fci(PAYMENT_AID, prof.contactless), 0x9000)
        self.session.new_selection("app")
        face = prof.contactless if self.session.contactless and prof.contactless else prof.contact
        return ResponseAPDU(application_fci(PAYMENT_AID, face), 0x9000)

    # -- personalization (EMV CPS; GlobalPlatform 2.3.1 §11.11 STORE DATA) ------------------

    def begin_personalization(self) -> None:
        """INSTALL [for personalization] named this application: a STORE DATA sequence starts."""
        self._next_block = 0
        self._partial = b""

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
            dgis, partial = split_dgis(self._partial + cmd.data)
        except ValueError:
            return _sw(SW_WRONG_DATA)
        if partial and cmd.p1 & 0x80:
            return _sw(SW_WRONG_DATA)  # the last block ends inside a DGI
        if not encrypted and any(tag in ENCRYPTED_DGIS for tag, _ in dgis):
            return _sw(SW_SECURITY_STATUS_NOT_SATISFIED)  # secrets travel under C-DECRYPTION
        for tag, value in dgis:
            status = self._check_dgi(tag, value)
            if status is not None:
                return _sw(status)
        for tag, value in dgis:
            self.state.dgis[tag] = value
        self._partial = partial
        self._next_block += 1
        if cmd.p1 & 0x80:
            return self._finish_personalization()
        self._persist(self.state)
        return _sw(0x9000)

    @staticmethod
    def _check_dgi(tag: int, value: bytes) -> int | None:
        if tag not in FIXED_DGIS and not is_record_dgi(tag):
            return SW_REFERENCED_DATA_NOT_FOUND  # EMV CPS: DGI not recognised
        if tag in ENCRYPTED_DGIS:
            sizes = {DGI_KEYS: 48, DGI_PIN: 16}
            want = sizes.get(tag)
            fits = len(value) == want if want else len(value) >= 24 and len(value) % 8 == 0
            return None if fits else SW_WRONG_DATA
        if tag == DGI_PIN_COUNTERS:
            return None if len(value) == 2 else SW_WRONG_DATA
        try:
            items = decode_tlv(value)
        except ValueError:
            return SW_WRONG_DATA
        if is_record_dgi(tag) and (len(items) != 1 or items[0].tag != 0x70):
            return SW_WRONG_DATA  # a record DGI is exactly one `70` template
        return None

    def _finish_personalization(self) -> ResponseAPDU:
        missing = missing_dgis(self.state.dgis, frozenset())
        if missing:
            log.info("last STORE DATA but DGIs missing: %s", [f"{m:04X}" for m in missing])
            self._persist(self.state)
            return _sw(SW_CONDITIONS_NOT_SATISFIED)
        try:
            profile(self.state.dgis)
            self._take_secrets()
        except ValueError as exc:
            log.info("card %s refuses its personalization: %s", self.state.chip_serial, exc)
            self._persist(self.state)
            return _sw(SW_WRONG_DATA)
        self.state.lifecycle = "personalized"
        self._persist(self.state)
        log.info("card %s personalized", self.state.chip_serial)
        return _sw(0x9000)

    def _take_secrets(self) -> None:
        """Decrypt the sensitive DGIs under K_DEK; the card keeps the keys, not the ciphertext."""
        dgis, k_dek = self.state.dgis, self.state.k_dek
        limit, tries = pin_counters(dgis[DGI_PIN_COUNTERS])
        pin_block = decrypt_pin_dgi(k_dek, dgis[DGI_PIN])
        icc_key = unwrap_icc_key(k_dek, dgis[DGI_ICC_KEY]) if DGI_ICC_KEY in dgis else None
        clear = aes_ecb_decrypt(k_dek, dgis[DGI_KEYS])
        state = self.state
        state.mk_ac, state.mk_smi, state.mk_smc = clear[:16], clear[16:32], clear[32:]
        state.pin_block, state.pin_try_limit, state.pin_tries = pin_block, limit, tries
        state.icc_key = icc_key
        for dgi in (DGI_KEYS, DGI_PIN, DGI_ICC_KEY, DGI_PIN_COUNTERS):
            dgis.pop(dgi, None)

    # -- terminal behaviour (EMV 4.3 Book 3 §6.5) ----------------------------------------------

    def execute(self, cmd: CommandAPDU) -> ResponseAPDU:
        """A terminal command to the selected PSE, PPSE or application."""
        prof = self.profile
        if cmd.ins == 0xB2:
            return self.read_record(cmd)
        if prof is None or self.session.selected != "app":
            return _sw(SW_CONDITIONS_NOT_SATISFIED)
        if cmd.ins == 0xA8:
            return get_processing_options(prof, self.session, cmd)
        if cmd.ins == 0xAE:
            return generate_ac(self.state, prof, self.session, cmd, self._persist)
        if cmd.ins == 0x20:
            return verify(self.state, self.session, cmd, self._persist)
        if cmd.ins == 0x88:
            return internal_authenticate(self.state, self.session, cmd)
        return _sw(SW_INS_NOT_SUPPORTED)

    def read_record(self, cmd: CommandAPDU) -> ResponseAPDU:
        """READ RECORD, P1 record number, P2 = SFI << 3 | 100 (Book 3 §6.5.11)."""
        if cmd.data:
            return _sw(SW_WRONG_LENGTH)
        if cmd.p2 & 0x07 != 0x04 or cmd.p1 == 0:
            return _sw(SW_INCORRECT_P1P2)
        prof = self.profile
        if prof is None or self.session.selected not in ("pse", "app"):
            return _sw(SW_CONDITIONS_NOT_SATISFIED)
        sfi = cmd.p2 >> 3
        if self.session.selected == "pse":
            if sfi != PSE_DIRECTORY_SFI:
                return _sw(SW_FILE_NOT_FOUND)
            if cmd.p1 != 1:
                return _sw(SW_RECORD_NOT_FOUND)
            return ResponseAPDU(pse_record(PAYMENT_AID, prof.contact), 0x9000)
        record = self.state.dgis.get((sfi << 8) | cmd.p1) if 1 <= sfi <= 10 else None
        if record is None:
            has_sfi = any(is_record_dgi(tag) and tag >> 8 == sfi for tag in self.state.dgis)
            return _sw(SW_RECORD_NOT_FOUND if has_sfi else SW_FILE_NOT_FOUND)
        return ResponseAPDU(record, 0x9000)

    def get_data(self, tag: int) -> bytes | None:
        """GET DATA (Book 3 §6.5.7): ATC, last online ATC register, PIN try counter."""
        if not self.personalized:
            return None
        if tag == 0x9F36:
            return tlv(0x9F36, self.state.atc.to_bytes(2, "big"))
        if tag == 0x9F13:
            return tlv(0x9F13, self.state.last_online_atc.to_bytes(2, "big"))
        if tag == 0x9F17:
            return tlv(0x9F17, bytes((self.state.pin_tries,)))
        return None
