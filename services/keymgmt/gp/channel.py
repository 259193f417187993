"""What both secure-channel protocols share (GlobalPlatform SCP03 and SCP02, host side): the
card's INITIALIZE UPDATE answer, the clear script commands, the refusals, and APDU framing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from pkcs11 import Attribute

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


SESSION_KEY: Final[dict[Attribute, Any]] = {
    Attribute.TOKEN: False,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
}


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
