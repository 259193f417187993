"""SCP02 (i=15, 3DES), host side, on the HSM worker: for cards that answer INITIALIZE UPDATE
with SCP02. Its session keys are derived the way the module doc of secure_channel.py says:
the 3DES-CBC over two blocks b1 || 00*8 is c1 || E(c1), c1 = E(b1) computed with C_Encrypt,
then one CKM_DES3_ECB_ENCRYPT_DATA derivation over b1 || c1."""

from __future__ import annotations

import hmac

from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag
from pkcs11.constants import DEFAULT

from services.keymgmt.gp.cardkeys import cpg202_aes_block
from services.keymgmt.gp.channel import (
    CLA_SM,
    LEVEL_C_DEC_C_MAC,
    LEVEL_C_MAC,
    SCP02_KEY_IDS,
    SESSION_KEY,
    CardCryptogramMismatch,
    InitializeUpdateAnswer,
    SecureChannelError,
    split_apdu,
)
from services.keymgmt.hsm.derive import des3_derive
from services.keymgmt.hsm.p11 import SymKey, as_key, encrypt
from services.keymgmt.hsm.session import Hsm


def _pad8(data: bytes) -> bytes:
    padded = data + b"\x80"
    return padded + bytes(-len(padded) % 8)


class Scp02HostSession:
    """One SCP02 session (i=15), host side, on the HSM worker; `close()` destroys the keys.

    C-MAC on the unmodified APDU: ISO 9797-1 MAC algorithm 3 under S-MAC with the ICV (zero for
    EXTERNAL AUTHENTICATE, then the previous C-MAC encrypted with single DES under S-MAC's left
    half, a key object of its own); C-DECRYPTION: 3DES-CBC, zero IV, under S-ENC."""

    def __init__(
        self, s_enc: SymKey, s_mac: SymKey, s_mac_left: SymKey, context: tuple[bytes, bytes, bytes]
    ) -> None:
        self._s_enc, self._s_mac, self._s_mac_left = s_enc, s_mac, s_mac_left
        self._host, self._sequence, self._card = context
        self._icv = bytes(8)
        self.level = 0

    def _full_mac(self, data: bytes) -> bytes:
        return encrypt(self._s_enc, _pad8(data), Mechanism.DES3_CBC, bytes(8))[-8:]

    def card_cryptogram(self) -> bytes:
        return self._full_mac(self._host + self._sequence + self._card)

    def _mac(self, data: bytes) -> bytes:
        padded = _pad8(data)
        chain = self._icv
        if len(padded) > 8:
            chain = encrypt(self._s_mac_left, padded[:-8], Mechanism._DES_CBC, chain)[-8:]
        last = bytes(a ^ b for a, b in zip(padded[-8:], chain, strict=True))
        mac = encrypt(self._s_mac, last, Mechanism.DES3_ECB)
        self._icv = encrypt(self._s_mac_left, mac, Mechanism._DES_ECB)
        return mac

    def external_authenticate(self, level: int) -> bytes:
        if level not in (LEVEL_C_MAC, LEVEL_C_DEC_C_MAC):
            raise SecureChannelError(f"security level {level:02X} is not 01 or 03")
        self.level = level
        host = self._full_mac(self._sequence + self._card + self._host)
        mac = self._mac(bytes((0x80, 0x82, level, 0x00, 8)) + host)
        return bytes((0x84, 0x82, level, 0x00, 16)) + host + mac

    def wrap(self, apdu: bytes) -> bytes:
        header, data, le = split_apdu(apdu)
        cla, ins, p1, p2 = header
        if cla & 0x0C or cla & 0x03:
            raise SecureChannelError(f"command {header.hex().upper()}: CLA already has SM/channel")
        mac = self._mac(header + bytes((len(data),)) + data)
        if self.level & 0x02 and data:
            data = encrypt(self._s_enc, _pad8(data), Mechanism.DES3_CBC, bytes(8))
        if len(data) + 8 > 255:
            raise SecureChannelError(f"command {header.hex().upper()} exceeds a short APDU")
        return bytes((cla | CLA_SM, ins, p1, p2, len(data) + 8)) + data + mac + le

    def close(self) -> None:
        for key in (self._s_enc, self._s_mac, self._s_mac_left):
            key.destroy()


def _scp02_static(hsm: Hsm, kmc_label: str, div: bytes, i: int) -> SymKey:
    """An SCP02 static key: CPG202-AES (key number i) from the KMC, as a DES2 object."""
    key = hsm.key(kmc_label).derive_key(
        KeyType.DES2,
        128,
        capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DERIVE,
        mechanism=Mechanism.AES_ECB_ENCRYPT_DATA,
        mechanism_param=cpg202_aes_block(div, i),
        template={Attribute.VALUE_LEN: DEFAULT, **SESSION_KEY},
    )
    return as_key(key)


def open_scp02_session(
    hsm: Hsm, kmc_label: str, host_challenge: bytes, answer: InitializeUpdateAnswer
) -> Scp02HostSession:
    div, seq = answer.diversification_data, answer.sequence_counter
    made: list[SymKey] = []
    try:
        statics = [_scp02_static(hsm, kmc_label, div, i) for i in SCP02_KEY_IDS]
        made += statics
        keys: list[SymKey] = []
        for static, constant in zip(statics, (b"\x01\x82", b"\x01\x01"), strict=True):
            b1 = constant + seq + bytes(4)  # first block of constant || counter || 00 * 12
            c1 = encrypt(static, b1, Mechanism.DES3_ECB)
            keys.append(des3_derive(static, b1 + c1, MechanismFlag.ENCRYPT))
            made.append(keys[-1])
        mac_b1 = b"\x01\x01" + seq + bytes(4)  # S-MAC's left half is E(K-MAC, b1): its own key
        keys.append(des3_derive(statics[1], mac_b1, MechanismFlag.ENCRYPT))
        made.append(keys[-1])
    except BaseException:
        for key in made:
            key.destroy()
        raise
    for key in statics:
        key.destroy()
    context = (host_challenge, seq, answer.card_challenge)
    session = Scp02HostSession(keys[0], keys[1], keys[2], context)
    if not hmac.compare_digest(session.card_cryptogram(), answer.card_cryptogram):
        session.close()
        raise CardCryptogramMismatch(answer.chip_serial)
    return session
