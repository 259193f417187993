"""Card-side SCP03 cryptography (GlobalPlatform Card Specification 2.3, Amendment D), in software.

The virtual card is a separate device, so it computes its side of the secure channel itself;
keymgmt computes the host side inside the HSM (services/keymgmt/gp/secure_channel.py). Both follow
docs/perso-protocol.md ("Secure channel: SCP03"):

- KDF: NIST SP 800-108 counter mode with AES-CMAC as PRF; the derivation data is
  label (11 x 00 || derivation constant) || 00 || L (2 bytes, bits) || i (1 byte) || context,
  context = host challenge || card challenge. 32 bytes: two full AES blocks.
- Session keys S-ENC (constant 04, from K-ENC) and S-MAC (06, from K-MAC), 128 bits.
- Card cryptogram (00) and host cryptogram (01): 64 bits of the KDF under S-MAC.
- C-MAC: AES-CMAC(S-MAC, MAC chaining value || header || Lc || data), first 8 bytes sent; the
  full 16 bytes become the next chaining value (16 x 00 before EXTERNAL AUTHENTICATE).
- C-DECRYPTION: AES-CBC under S-ENC, ICV = AES-ECB(S-ENC, encryption counter as 16 bytes);
  the counter is 1 for the first command after EXTERNAL AUTHENTICATE and counts every command,
  with data or without; the clear data is always padded 80 00.. to a multiple of 16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from vcard.crypto import aes_ecb_encrypt

SCP_ID: Final = 0x03
# i = 00: random card challenge, no R-MAC, no R-ENC (Amendment D table 5-1: b5 = 0 random
# challenge, b6 = 0 no R-MAC support, b7 = 0 no R-ENC support). The INITIALIZE UPDATE answer is
# then 29 bytes, without a sequence counter.
I_PARAM: Final = 0x00
KEY_VERSION: Final = 0x30  # the card's SCP03 key set (KVN 30..3F are SCP03's range)

DC_CARD_CRYPTOGRAM: Final = 0x00
DC_HOST_CRYPTOGRAM: Final = 0x01
DC_S_ENC: Final = 0x04
DC_S_MAC: Final = 0x06

LEVEL_C_MAC: Final = 0x01
LEVEL_C_DEC_C_MAC: Final = 0x03
LEVELS: Final = frozenset({LEVEL_C_MAC, LEVEL_C_DEC_C_MAC})
CLA_SM: Final = 0x04  # GlobalPlatform proprietary secure messaging (CLA b3)


def aes_cmac(key: bytes, data: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def derivation_data(constant: int, bits: int, context: bytes, counter: int = 1) -> bytes:
    """SCP03 KDF fixed input (Amendment D §4.1.5) with the counter at its place."""
    label = bytes(11) + bytes((constant,))
    return label + b"\x00" + bits.to_bytes(2, "big") + bytes((counter,)) + context


def kdf(key: bytes, constant: int, context: bytes, bits: int) -> bytes:
    out = b""
    counter = 1
    while len(out) * 8 < bits:
        out += aes_cmac(key, derivation_data(constant, bits, context, counter))
        counter += 1
    return out[: bits // 8]


def pad80(data: bytes, block: int = 16) -> bytes:
    padded = data + b"\x80"
    return padded + bytes(-len(padded) % block)


def unpad80(data: bytes) -> bytes:
    stripped = data.rstrip(b"\x00")
    if not stripped.endswith(b"\x80") or len(data) - len(stripped) >= 16:
        raise ValueError("bad 80 00.. padding")
    return stripped[:-1]


def aes_cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return dec.update(data) + dec.finalize()


def aes_cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def icv(s_enc: bytes, counter: int) -> bytes:
    return aes_ecb_encrypt(s_enc, counter.to_bytes(16, "big"))


@dataclass(frozen=True)
class SessionKeys:
    s_enc: bytes
    s_mac: bytes

    def __repr__(self) -> str:  # keys never reach a log line
        return "SessionKeys(<hidden>)"


def session_keys(k_enc: bytes, k_mac: bytes, host: bytes, card: bytes) -> SessionKeys:
    context = host + card
    return SessionKeys(kdf(k_enc, DC_S_ENC, context, 128), kdf(k_mac, DC_S_MAC, context, 128))


def card_cryptogram(keys: SessionKeys, host: bytes, card: bytes) -> bytes:
    return kdf(keys.s_mac, DC_CARD_CRYPTOGRAM, host + card, 64)


def host_cryptogram(keys: SessionKeys, host: bytes, card: bytes) -> bytes:
    return kdf(keys.s_mac, DC_HOST_CRYPTOGRAM, host + card, 64)
