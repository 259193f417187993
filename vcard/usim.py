"""The USIM application of the virtual card: personalization, files, AUTHENTICATE (Milenage).

Contract with keymgmt (docs/perso-protocol.md, "SIM products"). Before personalization the
USIM takes STORE DATA (one DGI per command, DGI format) only as handed over by the card
manager from an authenticated SCP03 session (vcard/gp.py, INSTALL [for personalization] of
USIM_AID), and DGI 8101 only from a session that encrypts command data:

    DGI 0201  EF_ICCID contents (10 bytes, TS 102 221 §13.2: BCD, nibbles swapped, F-padded)
    DGI 0202  EF_IMSI contents (9 bytes, TS 31.102 §4.2.2)
    DGI 0203  EF_AD contents (TS 31.102 §4.2.18; byte 4 = length of the MNC)
    DGI 8101  AES-128-ECB(K_DEK, Ki) || AES-128-ECB(K_DEK, OPc), 32 bytes

After the last block the card checks every DGI is there and that DGI 8101 opens under its
K_DEK, and from then on answers SELECT (by AID, 6A82 before personalization as if the
application were not there, so an EMV product's chip is no SIM; files by FID or path), READ
BINARY and
AUTHENTICATE in the 3G security context (TS 31.102 §7.1.2.1): `00 88 00 81 22 10 RAND 10 AUTN`
-> `DB 08 RES 10 CK 10 IK` (9000), `DC 0E AUTS` on a SQN out of range (TS 33.102 §6.3.3), or
9862 when the network's MAC is wrong. Like a physical card it keeps Ki and OPc in its NVM
(here DGI 8101 as stored, opened under K_DEK for each AUTHENTICATE) and the highest SQN it
accepted. No PIN is set on this test USIM (a real one asks PIN1 before AUTHENTICATE).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Final

from shared.iso7816 import (
    SW_CONDITIONS_NOT_SATISFIED,
    SW_FILE_NOT_FOUND,
    SW_INCORRECT_P1P2,
    SW_INS_NOT_SUPPORTED,
    SW_REFERENCED_DATA_NOT_FOUND,
    SW_SECURITY_STATUS_NOT_SATISFIED,
    SW_WRONG_DATA,
    SW_WRONG_LENGTH,
    SW_WRONG_P1P2,
    CommandAPDU,
    ResponseAPDU,
    decode_dgis,
    tlv,
)
from vcard.crypto import aes_ecb_decrypt
from vcard.milenage import Milenage
from vcard.store import CardState

log = logging.getLogger(__name__)

# RID A000000087 (3GPP), PIX 1002 = USIM, then country and provider fields (here the bureau's).
USIM_AID: Final = bytes.fromhex("A0000000871002FFFFFFFF8907090000")
DGI_ICCID: Final = 0x0201
DGI_IMSI: Final = 0x0202
DGI_AD: Final = 0x0203
DGI_SECRETS: Final = 0x8101
# The highest SQN accepted so far, in the card's NVM (never written by STORE DATA).
NVM_SQN: Final = 0xDF01
USIM_DGIS: Final = frozenset({DGI_ICCID, DGI_IMSI, DGI_AD, DGI_SECRETS})
DGI_LENGTHS: Final = {DGI_ICCID: 10, DGI_IMSI: 9, DGI_SECRETS: 32}
FID_MF: Final = 0x3F00
FID_ADF: Final = 0x7FFF  # the current ADF (the USIM), TS 102 221 §8.3
FILES: Final = {0x2FE2: DGI_ICCID, 0x6F07: DGI_IMSI, 0x6FAD: DGI_AD}
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


class UsimApplication:
    """One USIM instance bound to one card's persistent state."""

    def __init__(self, state: CardState, persist: Callable[[CardState], None]) -> None:
        self.state = state
        self._persist = persist
        self._next_block = 0
        self._file: int | None = None

    @property
    def personalized(self) -> bool:
        return self.state.lifecycle == "personalized" and DGI_SECRETS in self.state.dgis

    def select(self) -> ResponseAPDU:
        """SELECT by AID: the ADF's FCP (`62`: `82` descriptor, `84` AID)."""
        self._next_block, self._file = 0, None
        fcp = tlv(0x62, tlv(0x82, bytes.fromhex("7821")) + tlv(0x84, USIM_AID))
        return ResponseAPDU(fcp, 0x9000)

    def deselect(self) -> None:
        self._file = None

    def select_file(self, cmd: CommandAPDU) -> ResponseAPDU:
        """SELECT by FID (P1 00) or by path from the MF (P1 08): the last FID names the file."""
        if cmd.p1 not in (0x00, 0x08) or cmd.p2 not in (0x04, 0x0C):
            return _sw(SW_INCORRECT_P1P2)
        if not cmd.data or len(cmd.data) % 2:
            return _sw(SW_WRONG_LENGTH)
        fid = int.from_bytes(cmd.data[-2:], "big")
        if fid in (FID_MF, FID_ADF):
            self._file = None
            return _sw(0x9000)
        tag = FILES.get(fid)
        if tag is None or not self.personalized or tag not in self.state.dgis:
            return _sw(SW_FILE_NOT_FOUND)
        self._file = fid
        if cmd.p2 == 0x0C:
            return _sw(0x9000)
        size = len(self.state.dgis[tag])
        fcp = (
            tlv(0x82, bytes.fromhex("4121"))  # working EF, transparent
            + tlv(0x83, fid.to_bytes(2, "big"))
            + tlv(0x80, size.to_bytes(2, "big"))
            + tlv(0x8A, b"\x05")  # life cycle: operational, activated
        )
        return ResponseAPDU(tlv(0x62, fcp), 0x9000)

    def execute(self, cmd: CommandAPDU) -> ResponseAPDU:
        if cmd.ins == 0xB0:
            return self._read_binary(cmd)
        if cmd.ins == 0x88:
            return self._authenticate(cmd)
        if cmd.ins == 0xE2:
            # Personalization data only arrives through the card manager's secure channel.
            return _sw(SW_SECURITY_STATUS_NOT_SATISFIED)
        return _sw(SW_INS_NOT_SUPPORTED)

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
            if tag not in USIM_DGIS:
                return _sw(SW_REFERENCED_DATA_NOT_FOUND)
            if tag == DGI_SECRETS and not encrypted:
                return _sw(SW_SECURITY_STATUS_NOT_SATISFIED)  # keys under C-DECRYPTION only
            if len(value) != DGI_LENGTHS.get(tag, len(value)) or not value:
                return _sw(SW_WRONG_DATA)
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
        self.state.dgis[NVM_SQN] = bytes(6)
        self.state.lifecycle = "personalized"
        self._persist(self.state)
        log.info("card %s: USIM personalized", self.state.chip_serial)
        return _sw(0x9000)

    # -- in the field -----------------------------------------------------------------------

    def _read_binary(self, cmd: CommandAPDU) -> ResponseAPDU:
        if cmd.p1 & 0x80:
            return _sw(SW_INCORRECT_P1P2)  # short file identifiers are not supported
        if self._file is None:
            return _sw(SW_CONDITIONS_NOT_SATISFIED)  # no EF selected
        content = self.state.dgis[FILES[self._file]]
        offset = (cmd.p1 << 8) | cmd.p2
        if offset >= len(content):
            return _sw(SW_WRONG_P1P2)
        want = cmd.le if cmd.le is not None else 256
        return ResponseAPDU(content[offset : offset + want], 0x9000)

    def _milenage(self) -> Milenage:
        clear = aes_ecb_decrypt(self.state.k_dek, self.state.dgis[DGI_SECRETS])
        return Milenage(clear[:16], clear[16:])

    def _authenticate(self, cmd: CommandAPDU) -> ResponseAPDU:
        """AUTHENTICATE, 3G context (TS 31.102 §7.1.2.1; TS 33.102 §6.3.3 checks)."""
        if not self.personalized:
            return _sw(SW_CONDITIONS_NOT_SATISFIED)
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
