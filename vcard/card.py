"""The virtual card's operating system: ATR, power states, APDU dispatch, T=0 response rules.

Transport-agnostic: `VirtualCard.process()` takes command APDU bytes and returns response bytes,
so unit tests drive the card without sockets and `vcard.wire` attaches it to vpcd.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from shared.iso7816 import (
    SW1_BYTES_REMAINING,
    SW1_WRONG_LE,
    SW_CHAINING_NOT_SUPPORTED,
    SW_CLA_NOT_SUPPORTED,
    SW_CONDITIONS_NOT_SATISFIED,
    SW_FILE_NOT_FOUND,
    SW_FUNCTION_NOT_SUPPORTED,
    SW_INCORRECT_P1P2,
    SW_INS_NOT_SUPPORTED,
    SW_LOGICAL_CHANNEL_NOT_SUPPORTED,
    SW_REFERENCED_DATA_NOT_FOUND,
    SW_SECURE_MESSAGING_NOT_SUPPORTED,
    SW_SECURITY_STATUS_NOT_SATISFIED,
    SW_UNKNOWN,
    SW_WRONG_LENGTH,
    ApduError,
    CommandAPDU,
    ResponseAPDU,
    tlv,
)
from vcard.emv import NAMES as PAYMENT_NAMES
from vcard.emv import PaymentApplication
from vcard.gp import ISD_AID, CardManager
from vcard.scp03 import CLA_SM
from vcard.store import CardState, Protocol
from vcard.uicc.atr import UICC_ATR
from vcard.usim import USIM_AID, UsimApplication

log = logging.getLogger(__name__)

HISTORICAL_BYTES: Final = b"CardBureau"


def _with_tck(atr: bytes) -> bytes:
    """TCK = xor of T0..last byte (ISO 7816-3 §8.2.5), mandatory when T=1 is offered."""
    check = 0
    for byte in atr[1:]:
        check ^= byte
    return atr + bytes((check,))


# The basic ATRs of EMV 4.3 Book 1 §8.3 (Table 8 for T=0, Table 9 for T=1), direct convention:
# T=0: TS=3B, T0=6x (TB1, TC1 follow; x historical bytes), TB1=00 (no VPP), TC1=00 (no extra
#      guard time); T=0 is implicit without TD1 and there is no TCK.
ATR_T0: Final = bytes((0x3B, 0x60 | len(HISTORICAL_BYTES), 0x00, 0x00)) + HISTORICAL_BYTES
# T=1: TS=3B, T0=Ex (TB1, TC1, TD1 follow), TB1=00, TC1=00, TD1=81 (TD2 follows, T=1),
#      TD2=31 (TA3 and TB3 follow, T=1), TA3=FE (IFSC 254, within 10..FE), TB3=45 (BWI 4,
#      CWI 5; 2^CWI > N+1 with N=0), then TCK.
ATR_T1: Final = _with_tck(
    bytes((0x3B, 0xE0 | len(HISTORICAL_BYTES), 0x00, 0x00, 0x81, 0x31, 0xFE, 0x45))
    + HISTORICAL_BYTES
)

# Commands this card knows: INS -> allowed CLA values (before channel/SM bits).
_ISO: Final = frozenset({0x00})
_PROPRIETARY: Final = frozenset({0x80})
_COMMANDS: Final[dict[int, frozenset[int]]] = {
    0xA4: _ISO,  # SELECT
    0xB2: _ISO,  # READ RECORD
    0xC0: _ISO,  # GET RESPONSE
    0xCA: _ISO | _PROPRIETARY,  # GET DATA (EMV uses 80, ISO 00)
    0xE2: _PROPRIETARY,  # STORE DATA (GlobalPlatform)
    0x50: _PROPRIETARY,  # INITIALIZE UPDATE (GlobalPlatform)
    0x82: _PROPRIETARY,  # EXTERNAL AUTHENTICATE (GlobalPlatform, always with a C-MAC)
    0xE6: _PROPRIETARY,  # INSTALL (GlobalPlatform; [for personalization] only)
    0xAE: _PROPRIETARY,  # GENERATE AC (EMV)
    0xB0: _ISO,  # READ BINARY (UICC files, TS 102 221 §11.1.3)
    0xD6: _ISO,  # UPDATE BINARY
    0xDC: _ISO,  # UPDATE RECORD
    0xF2: _PROPRIETARY,  # STATUS (TS 102 221 §11.1.2)
    0x20: _ISO,  # VERIFY PIN
    0x24: _ISO,  # CHANGE PIN
    0x26: _ISO,  # DISABLE PIN
    0x28: _ISO,  # ENABLE PIN
    0x2C: _ISO,  # UNBLOCK PIN
    0x88: _ISO,  # AUTHENTICATE (USIM, TS 31.102 §7.1.2); INTERNAL AUTHENTICATE (EMV DDA)
    0xA8: _PROPRIETARY,  # GET PROCESSING OPTIONS (EMV)
}
_CASE2: Final = frozenset({0xB2, 0xCA, 0xC0, 0xB0, 0xF2})  # commands that only return data


def _sw(sw: int) -> ResponseAPDU:
    return ResponseAPDU(b"", sw)


@dataclass
class Faults:
    """Per-insertion faults; defects of the silicon live in CardState instead."""

    remove_after_apdus: int | None = None


class VirtualCard:
    def __init__(
        self,
        state: CardState,
        persist: Callable[[CardState], None],
        faults: Faults | None = None,
    ) -> None:
        self.state = state
        self.faults = faults or Faults()
        self.app = PaymentApplication(state, persist)
        self.usim = UsimApplication(state, persist)
        self.manager = CardManager(state, self.app, usim=self.usim, persist=persist)
        self.apdu_count = 0
        self.powered = False
        self._selected: PaymentApplication | CardManager | UsimApplication | None = None
        self._pending: bytes = b""  # T=0 data waiting for GET RESPONSE
        self._protocol: Protocol = state.protocol  # the one the last ATR offered

    @property
    def chip_serial(self) -> str:
        return self.state.chip_serial

    @property
    def atr(self) -> bytes:
        """A personalised USIM makes the chip a UICC: it answers the UICC's ATR (T=0, TS 102
        221 §6.3); the blank and the payment card answer as the factory made them."""
        if self.usim.personalized:
            return UICC_ATR
        return ATR_T0 if self.state.protocol == "T=0" else ATR_T1

    @property
    def removal_due(self) -> bool:
        limit = self.faults.remove_after_apdus
        return limit is not None and self.apdu_count >= limit

    def power_on(self) -> None:
        self.powered = True
        self._reset_volatile()

    def power_off(self) -> None:
        self.powered = False
        self._reset_volatile()

    def reset(self) -> None:
        self._reset_volatile()

    def _reset_volatile(self) -> None:
        # After a reset no application is selected: this card has no default application, the
        # terminal selects one (EMV 4.3 Book 1 §12, application selection). A personalised
        # UICC has its MF current instead (TS 102 221 §8.6), so a handset starts there.
        self.usim.reset()
        self._selected = self.usim if self.usim.personalized else None
        self.manager.deselect()  # a secure channel does not survive a reset
        self.app.reset_session()
        self._pending = b""
        self._protocol = "T=0" if self.usim.personalized else self.state.protocol

    def process(self, raw: bytes) -> bytes:
        self.apdu_count += 1
        try:
            cmd = CommandAPDU.parse(raw)
        except ApduError:
            return _sw(SW_WRONG_LENGTH).to_bytes()
        try:
            response = self._dispatch(cmd)
        except Exception:  # a bug in the card must still produce a status word, like a real OS
            log.exception("card %s failed on %s", self.chip_serial, raw.hex())
            response = _sw(SW_UNKNOWN)
        return response.to_bytes()

    def _dispatch(self, cmd: CommandAPDU) -> ResponseAPDU:
        if cmd.cla == 0xFF:
            return _sw(SW_CLA_NOT_SUPPORTED)  # FF is reserved for PPS (ISO 7816-3 §9)
        if cmd.ins == 0xC0:
            return self._get_response(cmd)
        self._pending = b""
        allowed = _COMMANDS.get(cmd.ins)
        if allowed is None:
            return _sw(SW_INS_NOT_SUPPORTED)
        # First interindustry class coding (ISO 7816-4 §5.1.1), also used by GlobalPlatform for
        # its proprietary class 8x: b8 proprietary, b5 chaining, b4-b3 SM, b2-b1 channel.
        if cmd.cla & 0x60 or cmd.cla & 0x80 not in allowed:
            return _sw(SW_CLA_NOT_SUPPORTED)
        if cmd.cla & 0x10:
            return _sw(SW_CHAINING_NOT_SUPPORTED)
        if cmd.cla & 0x03:
            return _sw(SW_LOGICAL_CHANNEL_NOT_SUPPORTED)
        secured = self._secure_messaging(cmd)
        if isinstance(secured, ResponseAPDU):
            return secured
        response = self._execute(secured)
        return self._shape(cmd, response)

    def _secure_messaging(self, cmd: CommandAPDU) -> CommandAPDU | ResponseAPDU:
        """GlobalPlatform secure messaging (CLA b3) belongs to the card manager's SCP03 session:
        the clear command, or the refusal. Inside an authenticated session every command but
        SELECT and INITIALIZE UPDATE (both end it) must be protected; an unprotected one closes
        the session."""
        channel = self.manager.channel
        if cmd.cla & 0x0C:
            if cmd.cla & 0x0C != CLA_SM or self._selected is not self.manager:
                return _sw(SW_SECURE_MESSAGING_NOT_SUPPORTED)
            if cmd.ins == 0x82:
                return channel.external_authenticate(cmd)
            clear = channel.unwrap(cmd)
            return _sw(clear) if isinstance(clear, int) else clear
        if channel.authenticated and cmd.ins not in (0xA4, 0x50):
            channel.close()
            return _sw(SW_SECURITY_STATUS_NOT_SATISFIED)
        return cmd

    def _execute(self, cmd: CommandAPDU) -> ResponseAPDU:
        if cmd.ins == 0xA4:
            return self._select(cmd)
        if cmd.ins == 0xCA:
            return self._get_data(cmd)
        app = self._selected
        if app is None:
            return _sw(SW_CONDITIONS_NOT_SATISFIED)  # no application selected
        if isinstance(app, CardManager):
            return app.execute(cmd)
        if isinstance(app, UsimApplication):
            return app.execute(cmd)
        if cmd.ins == 0xE2:
            # Personalization data only arrives through the card manager's secure channel.
            return _sw(SW_SECURITY_STATUS_NOT_SATISFIED)
        if cmd.ins in (0x50, 0x82, 0xE6):
            return _sw(SW_INS_NOT_SUPPORTED)  # card manager commands
        return app.execute(cmd)

    def _select(self, cmd: CommandAPDU) -> ResponseAPDU:
        uicc = self.usim.personalized and (cmd.p1 != 0x04 or USIM_AID.startswith(cmd.data))
        # the UICC's files and its USIM
        if uicc and cmd.data != ISD_AID and cmd.data not in PAYMENT_NAMES:
            response = self.usim.select(cmd)
            if response.sw == 0x9000:
                self.manager.deselect()
                self._selected = self.usim
            return response
        if cmd.p1 != 0x04:
            return _sw(SW_FUNCTION_NOT_SUPPORTED)  # only selection by DF name (AID)
        if cmd.p2 not in (0x00, 0x02, 0x0C, 0x0E):
            return _sw(SW_INCORRECT_P1P2)  # first/next occurrence; FCI or no data
        if not 5 <= len(cmd.data) <= 16:
            return _sw(SW_WRONG_LENGTH)  # an AID is 5 to 16 bytes (ISO 7816-5)
        if cmd.data == ISD_AID and cmd.p2 in (0x00, 0x0C):
            self._selected = self.manager
            return self.manager.select()
        if cmd.data not in PAYMENT_NAMES:
            return _sw(SW_FILE_NOT_FOUND)  # the current selection is kept
        fci = self.app.select(cmd.data, cmd.p2)
        if fci.sw != 0x9000:
            return fci
        self.manager.deselect()  # selecting another application ends the session
        self._selected = self.app
        return _sw(0x9000) if cmd.p2 & 0x0C == 0x0C else fci

    def _get_data(self, cmd: CommandAPDU) -> ResponseAPDU:
        if cmd.data:
            return _sw(SW_WRONG_LENGTH)
        tag = (cmd.p1 << 8) | cmd.p2
        if tag == 0x9F7F:
            return ResponseAPDU(tlv(0x9F7F, self.state.cplc), 0x9000)
        value = self.app.get_data(tag) if self._selected is self.app else None
        if value is None:
            return _sw(SW_REFERENCED_DATA_NOT_FOUND)
        return ResponseAPDU(value, 0x9000)

    def _shape(self, cmd: CommandAPDU, response: ResponseAPDU) -> ResponseAPDU:
        """Apply the transmission rules for response data (ISO 7816-3 APDU transport by T=0;
        ISO 7816-4 status words 61xx and 6Cxx).

        A command that only fetches data (case 2) with a wrong Le gets 6Cxx with the exact
        length. Under T=0 a command that sent data cannot carry Le, so response data waits
        for GET RESPONSE behind 61xx. Under T=1 the data comes back at once.
        """
        data = response.data
        if not data:
            return response
        exact = len(data) & 0xFF  # 256 bytes would be announced as 00
        if cmd.ins in _CASE2 and cmd.le is not None:
            t1_any = self._protocol == "T=1" and cmd.le == 256
            if cmd.le != len(data) and not t1_any:
                return _sw((SW1_WRONG_LE << 8) | exact)
            return response
        if self._protocol == "T=0" and cmd.data:
            self._pending = data + response.sw.to_bytes(2, "big")
            return _sw((SW1_BYTES_REMAINING << 8) | exact)
        return response

    def _get_response(self, cmd: CommandAPDU) -> ResponseAPDU:
        """GET RESPONSE `00 C0 00 00 Le` (ISO 7816-4 §7.6.1) for data held back under T=0."""
        if cmd.cla != 0x00:
            return _sw(SW_CLA_NOT_SUPPORTED)
        if cmd.p1 or cmd.p2:
            return _sw(SW_INCORRECT_P1P2)
        if not self._pending:
            return _sw(SW_CONDITIONS_NOT_SATISFIED)
        data, final_sw = self._pending[:-2], self._pending[-2:]
        want = cmd.le if cmd.le is not None else 256
        if want > len(data):
            return _sw((SW1_WRONG_LE << 8) | (len(data) & 0xFF))
        self._pending = data[want:] + final_sw if want < len(data) else b""
        if self._pending:
            left = len(self._pending) - 2
            return ResponseAPDU(data[:want], (SW1_BYTES_REMAINING << 8) | (left & 0xFF))
        return ResponseAPDU(data, int.from_bytes(final_sw, "big"))
