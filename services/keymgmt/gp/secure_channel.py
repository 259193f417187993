"""The host side of a GlobalPlatform SCP03 secure channel, computed in the HSM for a station.

Contract: docs/perso-protocol.md ("Secure channel: SCP03"). The station relays the card's
INITIALIZE UPDATE answer; here the card's static keys are derived from the KMC (CPG202-AES), the
session keys S-ENC and S-MAC are derived as sensitive, non-extractable session objects, the card
cryptogram is checked, and the EXTERNAL AUTHENTICATE plus every command of the script come back
C-MAC'ed (and, at security level 03, with their data encrypted). No key and no clear command
data of a level-03 session leaves keymgmt.

Script-agnostic: the caller hands a list of clear command APDUs, each marked sensitive or not
(`ScriptCommand`); any sensitive command puts the whole session at level 03 (C-DECRYPTION and
C-MAC; GlobalPlatform then encrypts every command that has data), otherwise level 01 (C-MAC).
EMV (emv/perso.py) and SIM (sim/perso.py) scripts go through the same `secure_script`.

SCP02 (i=15, 3DES) is the second protocol, for cards that answer INITIALIZE UPDATE with SCP02
(scp02.py, same interface); its session keys are derived the same way: the 3DES-CBC
over two blocks b1 || 00*8 is c1 || E(c1), c1 = E(b1) computed with C_Encrypt, then one
CKM_DES3_ECB_ENCRYPT_DATA derivation over b1 || c1.

SoftHSM cannot derive a key from a CMAC, so the SP 800-108 KDF runs as public values and one
derivation: the derivation data is 32 bytes, M1 || M2, and
    CMAC_K(M1 || M2) = AES_K(M2 xor K1 xor AES_K(M1)),   K1 = dbl(AES_K(0^16))   (SP 800-38B)
so C1 = AES_K(M1) and L = AES_K(0^16) are computed with C_Encrypt (their values are public
functions of the key that reveal nothing of it), and the session key is derived with
CKM_AES_ECB_ENCRYPT_DATA over M2 xor K1 xor C1: it exists only inside the HSM.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Sequence

from pkcs11 import KeyType, Mechanism, MechanismFlag

from services.keymgmt.gp.cardkeys import derive_static_key
from services.keymgmt.gp.channel import (
    CLA_SM,
    DC_CARD_CRYPTOGRAM,
    DC_HOST_CRYPTOGRAM,
    DC_S_ENC,
    DC_S_MAC,
    LEVEL_C_DEC_C_MAC,
    LEVEL_C_MAC,
    SCP02,
    SESSION_KEY,
    CardCryptogramMismatch,
    InitializeUpdateAnswer,
    ScriptCommand,
    SecureChannelError,
    SecuredScript,
    split_apdu,
)
from services.keymgmt.gp.scp02 import Scp02HostSession, open_scp02_session
from services.keymgmt.hsm.p11 import SymKey, as_key, encrypt
from services.keymgmt.hsm.session import Hsm

log = logging.getLogger(__name__)


def derivation_data(constant: int, bits: int, context: bytes) -> bytes:
    """SCP03 KDF input for counter 1 (Amendment D §4.1.5): 32 bytes with a 16-byte context."""
    return bytes(11) + bytes((constant,)) + b"\x00" + bits.to_bytes(2, "big") + b"\x01" + context


def _xor(*blocks: bytes) -> bytes:
    out = bytearray(16)
    for block in blocks:
        for n, byte in enumerate(block):
            out[n] ^= byte
    return bytes(out)


def _dbl(block: bytes) -> bytes:
    """Doubling in GF(2^128), SP 800-38B subkey generation."""
    value = int.from_bytes(block, "big") << 1
    if value >> 128:
        value = (value & ((1 << 128) - 1)) ^ 0x87
    return value.to_bytes(16, "big")


def _ecb(key: SymKey, block: bytes) -> bytes:
    return encrypt(key, block, Mechanism.AES_ECB)


def derive_session_key(
    static: SymKey, constant: int, context: bytes, caps: MechanismFlag
) -> SymKey:
    """S = CMAC_K(derivation data) as an HSM object; `static` needs ENCRYPT and DERIVE."""
    data = derivation_data(constant, 128, context)
    k1 = _dbl(_ecb(static, bytes(16)))
    c1 = _ecb(static, data[:16])
    key = static.derive_key(
        KeyType.AES,
        128,
        capabilities=caps,
        mechanism=Mechanism.AES_ECB_ENCRYPT_DATA,
        mechanism_param=_xor(data[16:], k1, c1),
        template=dict(SESSION_KEY),
    )
    return as_key(key)


def _cmac(key: SymKey, data: bytes) -> bytes:
    out = key.sign(data, mechanism=Mechanism.AES_CMAC)
    if not isinstance(out, bytes):
        raise TypeError("expected a one-shot CMAC")
    return out


def pad80(data: bytes) -> bytes:
    padded = data + b"\x80"
    return padded + bytes(-len(padded) % 16)


class HostSession:
    """One SCP03 session, host side, on the HSM worker. Call `close()` (destroys the keys)."""

    def __init__(
        self, s_enc: SymKey, s_mac: SymKey, host_challenge: bytes, card_challenge: bytes
    ) -> None:
        self._s_enc, self._s_mac = s_enc, s_mac
        self._context = host_challenge + card_challenge
        self._chaining = bytes(16)
        self._counter = 0
        self.level = 0

    def card_cryptogram(self) -> bytes:
        return _cmac(self._s_mac, derivation_data(DC_CARD_CRYPTOGRAM, 64, self._context))[:8]

    def _mac(self, header: bytes, data: bytes) -> bytes:
        cla, ins, p1, p2 = header
        if len(data) + 8 > 255:
            raise SecureChannelError(
                f"command {header.hex().upper()} with its C-MAC exceeds a short APDU"
            )
        modified = bytes(((cla & 0xF0) | CLA_SM, ins, p1, p2, len(data) + 8))
        self._chaining = _cmac(self._s_mac, self._chaining + modified + data)
        return modified + data + self._chaining[:8]

    def external_authenticate(self, level: int) -> bytes:
        if level not in (LEVEL_C_MAC, LEVEL_C_DEC_C_MAC):
            raise SecureChannelError(f"security level {level:02X} is not 01 or 03")
        self.level = level
        host = _cmac(self._s_mac, derivation_data(DC_HOST_CRYPTOGRAM, 64, self._context))[:8]
        return self._mac(bytes((0x80, 0x82, level, 0x00)), host)

    def wrap(self, apdu: bytes) -> bytes:
        header, data, le = split_apdu(apdu)
        if header[0] & 0x0C or header[0] & 0x03:
            raise SecureChannelError(f"command {header.hex().upper()}: CLA already has SM/channel")
        self._counter += 1  # every command of the session counts, with data or without
        if self.level & 0x02 and data:
            icv = _ecb(self._s_enc, self._counter.to_bytes(16, "big"))
            data = encrypt(self._s_enc, pad80(data), Mechanism.AES_CBC, icv)
        return self._mac(header, data) + le

    def close(self) -> None:
        for key in (self._s_enc, self._s_mac):
            key.destroy()


def open_session(
    hsm: Hsm, kmc_label: str, host_challenge: bytes, answer: InitializeUpdateAnswer
) -> HostSession | Scp02HostSession:
    """Static keys from the KMC, session keys, and the card cryptogram check (HSM worker)."""
    if len(host_challenge) != 8:
        raise SecureChannelError("the host challenge is 8 bytes")
    if answer.scp == SCP02:
        return open_scp02_session(hsm, kmc_label, host_challenge, answer)
    div, context = answer.diversification_data, host_challenge + answer.card_challenge
    caps = MechanismFlag.ENCRYPT | MechanismFlag.DERIVE
    made: list[SymKey] = []
    try:
        statics = [derive_static_key(hsm, kmc_label, div, i, caps) for i in (1, 2)]
        made += statics
        s_enc = derive_session_key(statics[0], DC_S_ENC, context, MechanismFlag.ENCRYPT)
        made.append(s_enc)
        s_mac = derive_session_key(statics[1], DC_S_MAC, context, MechanismFlag.SIGN)
        made.append(s_mac)
    except BaseException:
        for key in made:
            key.destroy()
        raise
    for key in statics:
        key.destroy()
    session = HostSession(s_enc, s_mac, host_challenge, answer.card_challenge)
    if not hmac.compare_digest(session.card_cryptogram(), answer.card_cryptogram):
        session.close()
        raise CardCryptogramMismatch(answer.chip_serial)
    return session


def secure_script(
    hsm: Hsm,
    kmc_label: str,
    host_challenge: bytes,
    iu_answer: bytes,
    build: Callable[[Hsm, InitializeUpdateAnswer], Sequence[ScriptCommand]],
) -> SecuredScript:
    """Check the card, then build its script (`build`, only for an authentic card) and protect
    it: EXTERNAL AUTHENTICATE first, then every command in order (HSM worker)."""
    answer = InitializeUpdateAnswer.parse(iu_answer)
    session = open_session(hsm, kmc_label, host_challenge, answer)
    try:
        commands = list(build(hsm, answer))
        if not commands:
            raise SecureChannelError("an empty script")
        sensitive = any(c.sensitive for c in commands)
        level = LEVEL_C_DEC_C_MAC if sensitive else LEVEL_C_MAC
        apdus = [session.external_authenticate(level)]
        apdus += [session.wrap(c.apdu) for c in commands]
        return SecuredScript(answer.chip_serial, level, tuple(apdus))
    finally:
        session.close()
