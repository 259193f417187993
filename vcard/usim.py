"""The UICC with its USIM application (ETSI TS 102 221, 3GPP TS 31.102): personalization,
the file system (vcard/uicc/), PINs and AUTHENTICATE (Milenage). docs/sim.md describes it all.

Contract with keymgmt (docs/perso-protocol.md, "SIM products"). Before personalization the
USIM takes STORE DATA (one DGI per command, DGI format) only as handed over by the card
manager from an authenticated SCP03 session (vcard/gp.py, INSTALL [for personalization] of
USIM_AID), and the 81xx DGIs only from a session that encrypts command data:

    DGI 0201  EF.ICCID (10 bytes, TS 102 221 §13.2: BCD, nibbles swapped, F-padded)
    DGI 0202  EF.IMSI (9 bytes, TS 31.102 §4.2.2)
    DGI 0203  EF.AD (TS 31.102 §4.2.18; byte 4 = length of the MNC)
    DGI 0204-020D  optional: EF.SPN, HPPLMN, FPLMN, ACC, UST, EST, PL, MSISDN, SMSP, ECC
    DGI 8101  AES-128-ECB(K_DEK, Ki) || AES-128-ECB(K_DEK, OPc), 32 bytes
    DGI 8102  optional: AES-128-CBC(K_DEK, zero IV, PIN1 PUK1 PIN2 PUK2 ADM1 flags), 48 bytes
    DGI 8103  optional: AES-128-ECB(K_DEK, KIc KID KIK), 48 bytes (OTA keys, kept)

After the last block the card checks the mandatory DGIs are there and that DGI 8101 opens
under its K_DEK, gives every file it was not sent its initial contents, and from then on
is a UICC: the MF is current after a reset, the USIM is selected by AID (6A82 before
personalization, as if it were not there, so an EMV product's chip is no SIM), files by FID,
path or SFI, each access checked against EF.ARR, PINs per TS 102 221 §11.1.9-13, and
AUTHENTICATE in the 3G security context (TS 31.102 §7.1.2.1) once PIN1 is verified or
disabled: `00 88 00 81 22 10 RAND 10 AUTN` -> `DB 08 RES 10 CK 10 IK` (9000), `DC 0E AUTS`
on a SQN out of range (TS 33.102 §6.3.3), or 9862 when the network's MAC is wrong. Like a
physical card it keeps Ki, OPc and the PINs in its NVM as sent (opened under K_DEK for each
use) and the highest SQN it accepted.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Final

from shared.iso7816 import (
    SW_CONDITIONS_NOT_SATISFIED,
    SW_FUNCTION_NOT_SUPPORTED,
    SW_INCORRECT_P1P2,
    SW_INS_NOT_SUPPORTED,
    SW_REFERENCED_DATA_NOT_FOUND,
    SW_SECURITY_STATUS_NOT_SATISFIED,
    SW_WRONG_DATA,
    SW_WRONG_LENGTH,
    CommandAPDU,
    ResponseAPDU,
    decode_dgis,
)
from vcard.crypto import aes_ecb_decrypt
from vcard.milenage import Milenage
from vcard.store import CardState
from vcard.uicc.arr import KEY_PIN1
from vcard.uicc.files import (
    DGI_AD,
    DGI_ICCID,
    DGI_IMSI,
    FID_ADF,
    PERSO_FILES,
    USIM_AID,
    initial_contents,
)
from vcard.uicc.filesystem import UiccFiles
from vcard.uicc.pins import DGI_PINS, NVM_PIN_STATE, Pins, cbc, initial_pin_state

__all__ = [
    "NVM_SQN",
    "USIM_AID",
    "UsimApplication",
    "ef_imsi",
    "iccid_of",
    "imsi_of",
    "swapped_bcd",
]

log = logging.getLogger(__name__)

DGI_SECRETS: Final = 0x8101
DGI_OTA_KEYS: Final = 0x8103
# The highest SQN accepted so far, in the card's NVM (never written by STORE DATA).
NVM_SQN: Final = 0xDF01
USIM_DGIS: Final = frozenset({DGI_ICCID, DGI_IMSI, DGI_AD, DGI_SECRETS})
SENSITIVE_DGIS: Final = frozenset({DGI_SECRETS, DGI_PINS, DGI_OTA_KEYS})
KNOWN_DGIS: Final = frozenset(PERSO_FILES) | SENSITIVE_DGIS
DGI_LENGTHS: Final = {DGI_SECRETS: 32, DGI_PINS: 48, DGI_OTA_KEYS: 48}
SW_AUTH_MAC_FAILURE: Final = 0x9862  # TS 31.102 §7.3: authentication error, incorrect MAC
CONTEXT_3G: Final = 0x81
SQN_DELTA: Final = 1 << 28  # TS 33.102 Annex C.2.1: a SQN further ahead is refused too


def _sw(sw: int) -> ResponseAPDU:
    return ResponseAPDU(b"", sw)


def swapped_bcd(digits: str, length: int) -> bytes:
    """Digits two per byte, low nibble first, F-padded to ``length`` bytes (EF_ICCID)."""
    padded = digits.ljust(2 * length, "F")
    return bytes(int(padded[i + 1] + padded[i], 16) for i in range(0, 2 * length, 2))


def ef_imsi(imsi: str) -> bytes:
    """EF_IMSI (TS 31.102 §4.2.2): length, then parity nibble 9 (odd) or 1 and the digits."""
    if not imsi.isdigit() or not 6 <= len(imsi) <= 15:
        raise ValueError("an IMSI is 6-15 digits")
    parity = "9" if len(imsi) % 2 else "1"
    return bytes(((len(imsi) + 2) // 2,)) + swapped_bcd(parity + imsi, 8)


def imsi_of(ef: bytes) -> str:
    digits = "".join(f"{b & 0x0F:X}{b >> 4:X}" for b in ef[1 : 1 + ef[0]])
    return digits[1:].rstrip("F")


def iccid_of(ef: bytes) -> str:
    return "".join(f"{b & 0x0F:X}{b >> 4:X}" for b in ef).rstrip("F")


def _dgi_problem(tag: int, value: bytes, encrypted: bool) -> int | None:
    """The status word refusing one personalization DGI, or None when it is acceptable."""
    if tag not in KNOWN_DGIS:
        return SW_REFERENCED_DATA_NOT_FOUND
    if tag in SENSITIVE_DGIS and not encrypted:
        return SW_SECURITY_STATUS_NOT_SATISFIED  # keys and PINs under C-DECRYPTION only
    ef = PERSO_FILES.get(tag)
    if ef is not None and ef.size is not None and len(value) != ef.size:
        return SW_WRONG_DATA
    if ef is not None and ef.structure == "linear" and len(value) % ef.record_length:
        return SW_WRONG_DATA
    if len(value) != DGI_LENGTHS.get(tag, len(value)) or not value:
        return SW_WRONG_DATA
    return None


class UsimApplication:
    """The UICC and its USIM bound to one card's persistent state."""

    def __init__(self, state: CardState, persist: Callable[[CardState], None]) -> None:
        self.state = state
        self._persist = persist
        self._next_block = 0
        self.pins = Pins(state, persist)
        self.files = UiccFiles(state, persist, self.pins)

    @property
    def personalized(self) -> bool:
        return self.state.lifecycle == "personalized" and DGI_SECRETS in self.state.dgis

    def reset(self) -> None:
        """A reset: the MF current, no application active, no PIN verified."""
        self.files.reset()
        self.pins.reset()

    def select(self, cmd: CommandAPDU) -> ResponseAPDU:
        """SELECT of the USIM by AID (P1 04), or of a file by FID (00), path (08, 09) or the
        parent DF (03); P1 01 (a child DF by FID) names nothing on this card."""
        if cmd.p1 == 0x04:
            return self.files.select_adf(cmd)
        if cmd.p1 not in (0x00, 0x03, 0x08, 0x09):
            return _sw(SW_FUNCTION_NOT_SUPPORTED if cmd.p1 != 0x01 else 0x6A82)
        return self.files.select(cmd)

    def execute(self, cmd: CommandAPDU) -> ResponseAPDU:
        handler = self._handlers().get(cmd.ins)
        if cmd.ins == 0xE2:
            # Personalization data only arrives through the card manager's secure channel.
            return _sw(SW_SECURITY_STATUS_NOT_SATISFIED)
        if handler is None or not self.personalized:
            return _sw(SW_INS_NOT_SUPPORTED if handler is None else SW_CONDITIONS_NOT_SATISFIED)
        return handler(cmd)

    def _handlers(self) -> dict[int, Callable[[CommandAPDU], ResponseAPDU]]:
        files, pins = self.files, self.pins
        return {
            0xB0: lambda c: files.binary(c, update=False),
            0xD6: lambda c: files.binary(c, update=True),
            0xB2: lambda c: files.record_op(c, update=False),
            0xDC: lambda c: files.record_op(c, update=True),
            0xF2: files.status,
            0x20: pins.verify,
            0x24: pins.change,
            0x26: lambda c: pins.set_enabled(c, enable=False),
            0x28: lambda c: pins.set_enabled(c, enable=True),
            0x2C: pins.unblock,
            0x88: self._authenticate,
        }

    # -- personalization -------------------------------------------------------------------

    def begin_personalization(self) -> None:
        self._next_block = 0

    def store_data(self, cmd: CommandAPDU, *, encrypted: bool) -> ResponseAPDU:
        """One STORE DATA the card manager unwrapped; `encrypted`: its session is at C-DEC."""
        if self.personalized:
            return _sw(SW_CONDITIONS_NOT_SATISFIED)
        if cmd.p1 & 0x18 != 0x08 or cmd.p1 & 0x07:
            return _sw(SW_INCORRECT_P1P2)
        if cmd.p2 != self._next_block:
            return _sw(SW_INCORRECT_P1P2)
        try:
            dgis = decode_dgis(cmd.data)
        except ValueError:
            return _sw(SW_WRONG_DATA)
        if not dgis:
            return _sw(SW_WRONG_LENGTH)
        for tag, value in dgis:
            refused = _dgi_problem(tag, value, encrypted)
            if refused is not None:
                return _sw(refused)
        for tag, value in dgis:
            self.state.dgis[tag] = value
        self._next_block += 1
        if cmd.p1 & 0x80:
            return self._finish()
        self._persist(self.state)
        return _sw(0x9000)

    def _finish(self) -> ResponseAPDU:
        missing = USIM_DGIS - self.state.dgis.keys()
        if missing:
            log.info("USIM: last STORE DATA but DGIs missing: %s", sorted(missing))
            self._persist(self.state)
            return _sw(SW_CONDITIONS_NOT_SATISFIED)
        imsi = imsi_of(self.state.dgis[DGI_IMSI])
        for tag, content in initial_contents(imsi).items():
            self.state.dgis.setdefault(tag, content)
        if DGI_PINS in self.state.dgis:
            flags = cbc(self.state.k_dek, self.state.dgis[DGI_PINS], decrypt=True)[40]
            self.state.dgis[NVM_PIN_STATE] = initial_pin_state(pin1_enabled=bool(flags & 1))
        self.state.dgis[NVM_SQN] = bytes(6)
        self.state.lifecycle = "personalized"
        self._persist(self.state)
        self.reset()
        log.info("card %s: USIM personalized", self.state.chip_serial)
        return _sw(0x9000)

    # -- in the field -----------------------------------------------------------------------

    def _milenage(self) -> Milenage:
        clear = aes_ecb_decrypt(self.state.k_dek, self.state.dgis[DGI_SECRETS])
        return Milenage(clear[:16], clear[16:])

    def _authenticate(self, cmd: CommandAPDU) -> ResponseAPDU:
        """AUTHENTICATE, 3G context (TS 31.102 §7.1.2.1; TS 33.102 §6.3.3 checks)."""
        if not self.personalized or self.files.df != FID_ADF:
            return _sw(SW_CONDITIONS_NOT_SATISFIED)  # in the USIM's context only
        if not self.pins.granted(KEY_PIN1):
            return _sw(SW_SECURITY_STATUS_NOT_SATISFIED)  # PIN1 first (TS 31.102 §7.1.2)
        if cmd.p1 != 0x00 or cmd.p2 != CONTEXT_3G:
            return _sw(SW_INCORRECT_P1P2)
        data = cmd.data
        if len(data) != 34 or data[0] != 16 or data[17] != 16:
            return _sw(SW_WRONG_LENGTH)
        rand, autn = data[1:17], data[18:34]
        milenage = self._milenage()
        vectors = milenage.f2345(rand)
        sqn = bytes(a ^ b for a, b in zip(autn[:6], vectors.ak, strict=True))
        amf, mac = autn[6:8], autn[8:16]
        xmac, _ = milenage.f1(rand, sqn, amf)
        if not hmac.compare_digest(mac, xmac):
            log.info("card %s: AUTHENTICATE with a wrong MAC", self.state.chip_serial)
            return _sw(SW_AUTH_MAC_FAILURE)
        highest = self.state.dgis[NVM_SQN]
        seen, offered = int.from_bytes(highest, "big"), int.from_bytes(sqn, "big")
        if not seen < offered <= seen + SQN_DELTA:
            # Synchronisation failure: AUTS = SQN_MS xor AK* || MAC-S (AMF* = 0000).
            _, mac_s = milenage.f1(rand, highest, bytes(2))
            ak_star = milenage.f5_star(rand)
            auts = bytes(a ^ b for a, b in zip(highest, ak_star, strict=True)) + mac_s
            return ResponseAPDU(bytes((0xDC, len(auts))) + auts, 0x9000)
        self.state.dgis[NVM_SQN] = sqn
        self._persist(self.state)  # the SQN is committed before the keys leave the card
        body = b"".join(bytes((len(v),)) + v for v in (vectors.res, vectors.ck, vectors.ik))
        return ResponseAPDU(b"\xdb" + body, 0x9000)
