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
EMV (services/keymgmt/perso.py) and SIM scripts go through the same `secure_script`.

SCP02 (i=15, 3DES) is the second protocol, for cards that answer INITIALIZE UPDATE with SCP02
(`Scp02HostSession`, same interface); its session keys are derived the same way: the 3DES-CBC
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
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag
from pkcs11.constants import DEFAULT
from pydantic import BaseModel, Field

from services.keymgmt.hsm import Hsm
from services.keymgmt.p11 import SymKey, as_key, encrypt

log = logging.getLogger(__name__)

SCP02: Final = 0x02
SCP03: Final = 0x03
KEY_VERSIONS: Final = range(0x30, 0x40)  # SCP03 key version numbers
SCP02_KEY_VERSIONS: Final = range(0x20, 0x30)
SCP02_KEY_IDS: Final = (0x11, 0x12)  # K-ENC, K-MAC of the SCP02 key set (CPG202-AES numbers)
SCP02_I: Final = 0x15
DC_CARD_CRYPTOGRAM: Final = 0x00
DC_HOST_CRYPTOGRAM: Final = 0x01
DC_S_ENC: Final = 0x04
DC_S_MAC: Final = 0x06
LEVEL_C_MAC: Final = 0x01
LEVEL_C_DEC_C_MAC: Final = 0x03
CLA_SM: Final = 0x04
IU_ANSWER_LENGTH: Final = 29  # i without pseudo-random challenge: no sequence counter
IU_ANSWER_LENGTH_02: Final = 28
# A refusal the station must tell from others (the chip is rejected, not kept for another card)
REFUSAL_HEADER: Final = "X-Bureau-Refusal"
CRYPTOGRAM_MISMATCH: Final = "card-cryptogram-mismatch"
CARD_CANCELLED: Final = "card-cancelled"  # the issuer cancelled the card: no script


class SecureChannelError(ValueError):
    """The INITIALIZE UPDATE answer or a script command cannot be used (says what is wrong)."""


class CardCryptogramMismatch(SecureChannelError):
    """The card did not prove it holds this bureau's keys: a card with other keys."""

    def __init__(self, chip_serial: str) -> None:
        super().__init__(
            f"card cryptogram mismatch: chip {chip_serial} does not hold the keys this bureau "
            "derives from its KMC"
        )


@dataclass(frozen=True)
class ScriptCommand:
    """One clear command APDU of a script; `sensitive` demands C-DECRYPTION for the session."""

    apdu: bytes
    sensitive: bool = False

    def __repr__(self) -> str:  # the data may hold cardholder data
        return f"ScriptCommand({self.apdu[:4].hex().upper()}, sensitive={self.sensitive})"


@dataclass(frozen=True)
class InitializeUpdateAnswer:
    diversification_data: bytes
    key_version: int
    i_param: int
    card_challenge: bytes
    card_cryptogram: bytes
    scp: int = SCP03
    sequence_counter: bytes = b""  # SCP02 only

    @property
    def chip_serial(self) -> str:
        return self.diversification_data[4:10].hex().upper()

    @classmethod
    def parse(cls, raw: bytes) -> InitializeUpdateAnswer:
        if len(raw) == IU_ANSWER_LENGTH_02 and raw[11:12] == bytes((SCP02,)):
            if raw[10] not in SCP02_KEY_VERSIONS:
                raise SecureChannelError(f"key version {raw[10]:02X} is not an SCP02 key set")
            return cls(raw[:10], raw[10], SCP02_I, raw[14:20], raw[20:28], SCP02, raw[12:14])
        if len(raw) != IU_ANSWER_LENGTH:
            raise SecureChannelError(
                f"INITIALIZE UPDATE answer is {len(raw)} bytes, SCP03 with i=00 gives 29"
            )
        if raw[11] != SCP03:
            raise SecureChannelError(f"the card offers SCP{raw[11]:02X}, not SCP03")
        if raw[10] not in KEY_VERSIONS:
            raise SecureChannelError(f"key version {raw[10]:02X} is not an SCP03 key set")
        if raw[12] & 0x10:
            raise SecureChannelError("pseudo-random card challenges (i b5) are not supported")
        return cls(raw[:10], raw[10], raw[12], raw[13:21], raw[21:29])


@dataclass(frozen=True)
class SecuredScript:
    chip_serial: str
    security_level: int
    apdus: tuple[bytes, ...]  # EXTERNAL AUTHENTICATE, then the script's commands, protected


class SecureScriptRequest(BaseModel):
    """POST /v1/perso/secure-scripts: what the station read from the card, nothing secret."""

    card_id: UUID
    chip_serial: str = Field(pattern=r"^[0-9A-Fa-f]{12}$", description="from the CPLC")
    host_challenge: str = Field(pattern=r"^[0-9A-Fa-f]{16}$", description="8 bytes hex")
    initialize_update_response: str = Field(
        pattern=r"^(?:[0-9A-Fa-f]{56}|[0-9A-Fa-f]{58})$",
        description="the card's answer without SW: 29 bytes (SCP03) or 28 (SCP02)",
    )


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


_SESSION_KEY: Final[dict[Attribute, Any]] = {
    Attribute.TOKEN: False,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
}


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
        template=dict(_SESSION_KEY),
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


def split_apdu(apdu: bytes) -> tuple[bytes, bytes, bytes]:
    """A short command APDU as (header, data, le)."""
    if len(apdu) < 4:
        raise SecureChannelError("a command APDU is at least its 4-byte header")
    header, body = apdu[:4], apdu[4:]
    if len(body) <= 1:
        return header, b"", body
    lc = body[0]
    if lc == 0 or len(body) not in (1 + lc, 2 + lc):
        raise SecureChannelError(f"command {header.hex().upper()}: Lc does not match its data")
    return header, body[1 : 1 + lc], body[1 + lc :]


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
    from services.keymgmt.perso import cpg202_aes_block  # perso imports this module

    key = hsm.key(kmc_label).derive_key(
        KeyType.DES2,
        128,
        capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DERIVE,
        mechanism=Mechanism.AES_ECB_ENCRYPT_DATA,
        mechanism_param=cpg202_aes_block(div, i),
        template={Attribute.VALUE_LEN: DEFAULT, **_SESSION_KEY},
    )
    return as_key(key)


def open_scp02_session(
    hsm: Hsm, kmc_label: str, host_challenge: bytes, answer: InitializeUpdateAnswer
) -> Scp02HostSession:
    from services.keymgmt.emv import des3_derive

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


def open_session(
    hsm: Hsm, kmc_label: str, host_challenge: bytes, answer: InitializeUpdateAnswer
) -> HostSession | Scp02HostSession:
    """Static keys from the KMC, session keys, and the card cryptogram check (HSM worker)."""
    from services.keymgmt.perso import derive_static_key  # perso imports this module

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
