"""Card-side SCP02 (GlobalPlatform Card Specification 2.2, Appendix E), i = 15, in software.

The second secure channel protocol of the virtual card manager, for cards made with an SCP02 key
set (vcard/store.py, `scp = "02"`); docs/perso-protocol.md ("Secure channel: SCP02") is the
contract. i = 15: three secure channel keys, C-MAC on the unmodified APDU, explicit initiation,
ICV zero at EXTERNAL AUTHENTICATE and then encrypted (single DES under the left half of
S-MAC) before each later C-MAC, random card challenge, no R-MAC.

- Session keys: 3DES-CBC (zero IV) under the static key over constant || sequence counter ||
  12 x 00; S-ENC (0182, from K-ENC), S-MAC (0101, from K-MAC).
- Card cryptogram: full 3DES CBC-MAC (zero IV, padding method 2) under S-ENC over host
  challenge || sequence counter || card challenge; host cryptogram over sequence counter ||
  card challenge || host challenge.
- C-MAC: ISO 9797-1 MAC algorithm 3 (single DES CBC under S-MAC's left half, 3DES on the last
  block), padding method 2, over CLA (SM bit and channel cleared) INS P1 P2 Lc || clear data.
- C-DECRYPTION: 3DES-CBC (zero IV) under S-ENC over data || 80 || 00.. to a multiple of 8.
- The 2-byte sequence counter is kept in the card's NVM and counts authenticated sessions.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Final

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from shared.iso7816 import (
    SW_CONDITIONS_NOT_SATISFIED,
    SW_INCORRECT_P1P2,
    SW_REFERENCED_DATA_NOT_FOUND,
    SW_SECURITY_STATUS_NOT_SATISFIED,
    SW_WRONG_LENGTH,
    CommandAPDU,
    ResponseAPDU,
)
from vcard.crypto import des3_ecb_encrypt, pad_method2
from vcard.store import CardState, diversification_data

log = logging.getLogger(__name__)

SCP02_ID: Final = 0x02
I_PARAM_02: Final = 0x15
KEY_VERSION_02: Final = 0x20  # SCP02 key version numbers are 20..2F
DC_C_MAC: Final = bytes.fromhex("0101")
DC_ENC: Final = bytes.fromhex("0182")
LEVELS: Final = frozenset({0x01, 0x03})
CLA_SM: Final = 0x04
SW_AUTHENTICATION_FAILED: Final = 0x6300


def _des3_key(key: bytes) -> bytes:
    return key + key[:8] if len(key) == 16 else key


def des3_cbc(key: bytes, data: bytes, iv: bytes = bytes(8), *, decrypt: bool = False) -> bytes:
    cipher = Cipher(TripleDES(_des3_key(key)), modes.CBC(iv))
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


def session_key(static: bytes, constant: bytes, sequence: int) -> bytes:
    return des3_cbc(static, constant + sequence.to_bytes(2, "big") + bytes(12))


def full_3des_mac(key: bytes, data: bytes) -> bytes:
    return des3_cbc(key, pad_method2(data))[-8:]


def retail_mac_icv(key: bytes, data: bytes, icv: bytes) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3 with padding method 2 and an initial chaining value."""
    padded = pad_method2(data)
    left = key[:8]
    chain = icv
    for start in range(0, len(padded) - 8, 8):
        block = bytes(a ^ b for a, b in zip(padded[start : start + 8], chain, strict=True))
        chain = des3_ecb_encrypt(left, block)
    last = bytes(a ^ b for a, b in zip(padded[-8:], chain, strict=True))
    return des3_ecb_encrypt(key, last)


def unpad_method2(data: bytes) -> bytes:
    stripped = data.rstrip(b"\x00")
    if not stripped.endswith(b"\x80") or len(data) - len(stripped) >= 8:
        raise ValueError("bad 80 00.. padding")
    return stripped[:-1]


def _sw(sw: int) -> ResponseAPDU:
    return ResponseAPDU(b"", sw)


class Scp02Channel:
    """One SCP02 session of the card manager; the same interface as gp.SecureChannel."""

    def __init__(
        self,
        state: CardState,
        challenge: Callable[[int], bytes],
        persist: Callable[[CardState], None],
    ) -> None:
        self.state = state
        self._challenge = challenge
        self._persist = persist
        self._pending: tuple[bytes, bytes, bytes, bytes] | None = None
        self._keys: tuple[bytes, bytes] | None = None  # (S-ENC, S-MAC)
        self.level = 0
        self._icv = bytes(8)

    @property
    def authenticated(self) -> bool:
        return self._keys is not None

    def close(self) -> None:
        self._pending, self._keys, self.level, self._icv = None, None, 0, bytes(8)

    def _static(self) -> tuple[bytes, bytes]:
        keys = self.state.scp02_keys
        if keys is None:
            raise ValueError("this card has no SCP02 key set")
        return keys[0], keys[1]

    def initialize_update(self, cmd: CommandAPDU) -> ResponseAPDU:
        """`80 50 KVN 00 08 host-challenge 00` -> div data || KVN 20 || 02 || sequence counter
        || card challenge (6) || card cryptogram (28 bytes)."""
        self.close()
        if cmd.p2 != 0x00:
            return _sw(SW_INCORRECT_P1P2)
        if cmd.p1 not in (0x00, KEY_VERSION_02):
            return _sw(SW_REFERENCED_DATA_NOT_FOUND)
        if len(cmd.data) != 8:
            return _sw(SW_WRONG_LENGTH)
        k_enc, k_mac = self._static()
        host, card, seq = cmd.data, self._challenge(6), self.state.scp02_sequence
        counter = seq.to_bytes(2, "big")
        s_enc, s_mac = session_key(k_enc, DC_ENC, seq), session_key(k_mac, DC_C_MAC, seq)
        self._pending = (s_enc, s_mac, host, card)
        cryptogram = full_3des_mac(s_enc, host + counter + card)
        body = diversification_data(self.state.cplc) + bytes((KEY_VERSION_02, SCP02_ID))
        return ResponseAPDU(body + counter + card + cryptogram, 0x9000)

    def external_authenticate(self, cmd: CommandAPDU) -> ResponseAPDU:
        pending, self._pending = self._pending, None
        if pending is None:
            return _sw(SW_CONDITIONS_NOT_SATISFIED)
        if not cmd.cla & CLA_SM:
            return _sw(SW_SECURITY_STATUS_NOT_SATISFIED)
        if cmd.p1 not in LEVELS or cmd.p2 != 0x00:
            return _sw(SW_INCORRECT_P1P2)
        if len(cmd.data) != 16:
            return _sw(SW_WRONG_LENGTH)
        s_enc, s_mac, host, card = pending
        mac = retail_mac_icv(s_mac, self._mac_input(cmd, cmd.data[:8]), bytes(8))
        if not hmac.compare_digest(mac, cmd.data[8:]):
            log.info("card %s: SCP02 EXTERNAL AUTHENTICATE C-MAC wrong", self.state.chip_serial)
            return _sw(SW_SECURITY_STATUS_NOT_SATISFIED)
        counter = self.state.scp02_sequence.to_bytes(2, "big")
        if not hmac.compare_digest(cmd.data[:8], full_3des_mac(s_enc, counter + card + host)):
            return _sw(SW_AUTHENTICATION_FAILED)
        self._keys, self.level = (s_enc, s_mac), cmd.p1
        self._icv = des3_ecb_encrypt(s_mac[:8], mac)  # ICV encryption (i b5)
        self.state.scp02_sequence = (self.state.scp02_sequence + 1) & 0xFFFF
        self._persist(self.state)
        return _sw(0x9000)

    @staticmethod
    def _mac_input(cmd: CommandAPDU, clear: bytes) -> bytes:
        """The unmodified APDU: CLA without SM and channel bits, Lc of the clear data."""
        return bytes((cmd.cla & 0xF0, cmd.ins, cmd.p1, cmd.p2, len(clear))) + clear

    def unwrap(self, cmd: CommandAPDU) -> CommandAPDU | int:
        keys = self._keys
        if keys is None:
            return SW_SECURITY_STATUS_NOT_SATISFIED
        s_enc, s_mac = keys
        if len(cmd.data) < 8:
            self.close()
            return SW_SECURITY_STATUS_NOT_SATISFIED
        body, mac = cmd.data[:-8], cmd.data[-8:]
        if self.level & 0x02 and body:
            try:
                if len(body) % 8:
                    raise ValueError("not whole blocks")
                body = unpad_method2(des3_cbc(s_enc, body, decrypt=True))
            except ValueError:
                self.close()
                return SW_SECURITY_STATUS_NOT_SATISFIED
        expected = retail_mac_icv(s_mac, self._mac_input(cmd, body), self._icv)
        if not hmac.compare_digest(expected, mac):
            log.info("card %s: SCP02 C-MAC wrong; session closed", self.state.chip_serial)
            self.close()
            return SW_SECURITY_STATUS_NOT_SATISFIED
        self._icv = des3_ecb_encrypt(s_mac[:8], expected)
        return CommandAPDU(cmd.cla & ~CLA_SM & 0xFF, cmd.ins, cmd.p1, cmd.p2, body, cmd.le)
