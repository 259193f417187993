"""The virtual card's GlobalPlatform card manager (Issuer Security Domain) with SCP03 (or SCP02,
vcard/scp02.py, for a card made with an SCP02 key set).

docs/perso-protocol.md ("Secure channel: SCP03") is the contract. The ISD opens a secure channel
with INITIALIZE UPDATE / EXTERNAL AUTHENTICATE, then every command of the session must carry a
valid C-MAC (and, at security level 03, encrypted data): one failure closes the session and the
card answers 6982 from then on. Personalization data reaches the payment application only this
way: INSTALL [for personalization] names the application, and the ISD hands it the STORE DATA
commands it has unwrapped (GlobalPlatform Card Specification 2.3 §11.5.2.3.4, §11.11).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from typing import Final

from shared.iso7816 import (
    SW_CONDITIONS_NOT_SATISFIED,
    SW_INCORRECT_P1P2,
    SW_INS_NOT_SUPPORTED,
    SW_REFERENCED_DATA_NOT_FOUND,
    SW_SECURITY_STATUS_NOT_SATISFIED,
    SW_WRONG_DATA,
    SW_WRONG_LENGTH,
    CommandAPDU,
    ResponseAPDU,
)
from vcard.emv import PAYMENT_AID, PaymentApplication
from vcard.scp02 import Scp02Channel
from vcard.scp03 import (
    CLA_SM,
    I_PARAM,
    KEY_VERSION,
    LEVEL_C_DEC_C_MAC,
    LEVELS,
    SCP_ID,
    SessionKeys,
    aes_cbc_decrypt,
    aes_cmac,
    card_cryptogram,
    host_cryptogram,
    icv,
    session_keys,
    unpad80,
)
from vcard.store import CardState, diversification_data
from vcard.usim import USIM_AID, UsimApplication

log = logging.getLogger(__name__)

ISD_AID: Final = bytes.fromhex("A000000151000000")  # GlobalPlatform's ISD AID
SW_AUTHENTICATION_FAILED: Final = 0x6300  # EXTERNAL AUTHENTICATE: host cryptogram wrong
INS_INITIALIZE_UPDATE: Final = 0x50
INS_EXTERNAL_AUTHENTICATE: Final = 0x82
INS_INSTALL: Final = 0xE6
INS_STORE_DATA: Final = 0xE2
INSTALL_FOR_PERSONALIZATION: Final = 0x20


def _sw(sw: int) -> ResponseAPDU:
    return ResponseAPDU(b"", sw)


class SecureChannel:
    """One SCP03 session (volatile: gone on reset, power-off or another SELECT)."""

    def __init__(self, state: CardState, challenge: Callable[[int], bytes]) -> None:
        self.state = state
        self._challenge = challenge
        self._pending: tuple[SessionKeys, bytes, bytes] | None = None
        self._keys: SessionKeys | None = None
        self.level = 0
        self._chaining = bytes(16)
        self._counter = 0

    @property
    def authenticated(self) -> bool:
        return self._keys is not None

    def close(self) -> None:
        self._pending, self._keys, self.level = None, None, 0
        self._chaining, self._counter = bytes(16), 0

    def initialize_update(self, cmd: CommandAPDU) -> ResponseAPDU:
        """`80 50 KVN 00 08 host-challenge 00` -> div data || KVN 30 || 03 || i || card challenge
        || card cryptogram (29 bytes)."""
        self.close()
        if cmd.p2 != 0x00:
            return _sw(SW_INCORRECT_P1P2)
        if cmd.p1 not in (0x00, KEY_VERSION):
            return _sw(SW_REFERENCED_DATA_NOT_FOUND)  # no key set with this version
        if len(cmd.data) != 8:
            return _sw(SW_WRONG_LENGTH)
        host, card = cmd.data, self._challenge(8)
        keys = session_keys(self.state.k_enc, self.state.k_mac, host, card)
        self._pending = (keys, host, card)
        body = (
            diversification_data(self.state.cplc)
            + bytes((KEY_VERSION, SCP_ID, I_PARAM))
            + card
            + card_cryptogram(keys, host, card)
        )
        return ResponseAPDU(body, 0x9000)

    def external_authenticate(self, cmd: CommandAPDU) -> ResponseAPDU:
        """`84 82 SL 00 10 host-cryptogram C-MAC`: the host proves it holds the card's keys."""
        pending, self._pending = self._pending, None
        if pending is None:
            return _sw(SW_CONDITIONS_NOT_SATISFIED)  # no INITIALIZE UPDATE just before
        if not cmd.cla & CLA_SM:
            return _sw(SW_SECURITY_STATUS_NOT_SATISFIED)  # EXTERNAL AUTHENTICATE carries a C-MAC
        if cmd.p1 not in LEVELS or cmd.p2 != 0x00:
            return _sw(SW_INCORRECT_P1P2)
        if len(cmd.data) != 16:
            return _sw(SW_WRONG_LENGTH)
        keys, host, card = pending
        full = aes_cmac(keys.s_mac, bytes(16) + self._mac_header(cmd) + cmd.data[:8])
        if not hmac.compare_digest(full[:8], cmd.data[8:]):
            log.info("card %s: EXTERNAL AUTHENTICATE C-MAC wrong", self.state.chip_serial)
            return _sw(SW_SECURITY_STATUS_NOT_SATISFIED)
        if not hmac.compare_digest(cmd.data[:8], host_cryptogram(keys, host, card)):
            log.info("card %s: host cryptogram wrong", self.state.chip_serial)
            return _sw(SW_AUTHENTICATION_FAILED)
        self._keys, self.level, self._chaining, self._counter = keys, cmd.p1, full, 0
        return _sw(0x9000)

    @staticmethod
    def _mac_header(cmd: CommandAPDU) -> bytes:
        # The C-MAC covers the CLA with the logical channel cleared and b3 set (GP SM).
        return bytes(((cmd.cla & 0xF0) | CLA_SM, cmd.ins, cmd.p1, cmd.p2, len(cmd.data)))

    def unwrap(self, cmd: CommandAPDU) -> CommandAPDU | int:
        """Check and strip the C-MAC (and decrypt): the clear command, or the status word of a
        failure, after which the session is closed."""
        keys = self._keys
        if keys is None:
            return SW_SECURITY_STATUS_NOT_SATISFIED
        self._counter += 1  # counts every command of the session, with data or without
        if len(cmd.data) < 8:
            self.close()
            return SW_SECURITY_STATUS_NOT_SATISFIED
        body, mac = cmd.data[:-8], cmd.data[-8:]
        full = aes_cmac(keys.s_mac, self._chaining + self._mac_header(cmd) + body)
        if not hmac.compare_digest(full[:8], mac):
            log.info("card %s: C-MAC wrong; session closed", self.state.chip_serial)
            self.close()
            return SW_SECURITY_STATUS_NOT_SATISFIED
        self._chaining = full
        if self.level & 0x02 and body:
            try:
                if len(body) % 16:
                    raise ValueError("not whole blocks")
                iv = icv(keys.s_enc, self._counter)
                body = unpad80(aes_cbc_decrypt(keys.s_enc, iv, body))
            except ValueError:
                log.info("card %s: undecryptable command data", self.state.chip_serial)
                self.close()
                return SW_SECURITY_STATUS_NOT_SATISFIED
        return CommandAPDU(cmd.cla & ~CLA_SM & 0xFF, cmd.ins, cmd.p1, cmd.p2, body, cmd.le)


class CardManager:
    """The Issuer Security Domain: secure channel, INSTALL [for personalization], STORE DATA."""

    def __init__(
        self,
        state: CardState,
        payment: PaymentApplication,
        challenge: Callable[[int], bytes] = secrets.token_bytes,
        usim: UsimApplication | None = None,
        persist: Callable[[CardState], None] | None = None,
    ) -> None:
        # The card offers one protocol: SCP03, or SCP02 for a card made with an SCP02 key set.
        self.channel: SecureChannel | Scp02Channel = (
            Scp02Channel(state, challenge, persist or (lambda _s: None))
            if state.scp == "02"
            else SecureChannel(state, challenge)
        )
        self.payment = payment
        self.usim = usim
        self._target: PaymentApplication | UsimApplication | None = None

    def select(self) -> ResponseAPDU:
        self.deselect()
        return _sw(0x9000)

    def deselect(self) -> None:
        self.channel.close()
        self._target = None

    def execute(self, cmd: CommandAPDU) -> ResponseAPDU:
        if cmd.ins == INS_INITIALIZE_UPDATE:
            self._target = None
            return self.channel.initialize_update(cmd)
        if not self.channel.authenticated:
            return _sw(SW_SECURITY_STATUS_NOT_SATISFIED)
        if cmd.ins == INS_INSTALL:
            return self._install(cmd)
        if cmd.ins == INS_STORE_DATA:
            if self._target is None:
                return _sw(SW_CONDITIONS_NOT_SATISFIED)  # no INSTALL [for personalization]
            encrypted = self.channel.level == LEVEL_C_DEC_C_MAC
            return self._target.store_data(cmd, encrypted=encrypted)
        return _sw(SW_INS_NOT_SUPPORTED)

    def _install(self, cmd: CommandAPDU) -> ResponseAPDU:
        """INSTALL [for personalization]: `80 E6 20 00 Lc 00 00 len AID 00 00 00`."""
        if cmd.p1 != INSTALL_FOR_PERSONALIZATION or cmd.p2 != 0x00:
            return _sw(SW_INCORRECT_P1P2)  # only this INSTALL variant exists on this card
        data = cmd.data
        if len(data) < 6 or data[0] or data[1] or len(data) != 3 + data[2] + 3:
            return _sw(SW_WRONG_DATA)
        aid = data[3 : 3 + data[2]]
        if data[3 + data[2] :] != bytes(3):
            return _sw(SW_WRONG_DATA)
        target = {PAYMENT_AID: self.payment, USIM_AID: self.usim}.get(aid)
        if target is None:
            return _sw(SW_REFERENCED_DATA_NOT_FOUND)
        self._target = target
        target.begin_personalization()
        return _sw(0x9000)
