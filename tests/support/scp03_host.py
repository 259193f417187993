"""An independent SCP03 host for tests (GlobalPlatform Amendment D), in clear software keys.

Written from the specification, not from vcard/scp03.py or services/keymgmt/gp/secure_channel.py:
the KDF is `cryptography`'s own NIST SP 800-108 KBKDF-CMAC with the counter placed in the middle
of the fixed input, as SCP03 does. Tests check the card and the HSM host against it.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.algorithms import AES
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFCMAC, CounterLocation, Mode

ISD_AID = bytes.fromhex("A000000151000000")


def scp03_kdf(key: bytes, constant: int, context: bytes, bits: int) -> bytes:
    # fixed input = label (11 x 00 || constant) || 00 || L; the 1-byte counter goes after
    # those 15 bytes, then the context.
    fixed = bytes(11) + bytes((constant,)) + b"\x00" + bits.to_bytes(2, "big") + context
    kdf = KBKDFCMAC(
        algorithm=AES,
        mode=Mode.CounterMode,
        length=bits // 8,
        rlen=1,
        llen=None,
        location=CounterLocation.MiddleFixed,
        label=None,
        context=None,
        fixed=fixed,
        break_location=15,
    )
    return kdf.derive(key)


def cmac(key: bytes, data: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def ecb(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def cbc(key: bytes, iv: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return dec.update(data) + dec.finalize()


def cpg202_aes(kmc: bytes, div: bytes, i: int) -> bytes:
    return ecb(kmc, div[4:10] + bytes((0xF0, i)) + div[4:10] + bytes((0x0F, i)))


class Scp03Host:
    """Host side of one session from the card's static keys and the INITIALIZE UPDATE answer."""

    def __init__(self, k_enc: bytes, k_mac: bytes, host_challenge: bytes, iu_response: bytes):
        assert len(iu_response) == 29, iu_response.hex()
        assert iu_response[11] == 0x03  # SCP03
        self.host_challenge = host_challenge
        self.card_challenge = iu_response[13:21]
        self.card_cryptogram = iu_response[21:29]
        context = host_challenge + self.card_challenge
        self.s_enc = scp03_kdf(k_enc, 0x04, context, 128)
        self.s_mac = scp03_kdf(k_mac, 0x06, context, 128)
        self.expected_card_cryptogram = scp03_kdf(self.s_mac, 0x00, context, 64)
        self.host_cryptogram = scp03_kdf(self.s_mac, 0x01, context, 64)
        self.chaining = bytes(16)
        self.counter = 0
        self.level = 0

    @classmethod
    def from_kmc(cls, kmc: bytes, host_challenge: bytes, iu_response: bytes) -> Scp03Host:
        div = iu_response[:10]
        return cls(cpg202_aes(kmc, div, 1), cpg202_aes(kmc, div, 2), host_challenge, iu_response)

    @property
    def card_authentic(self) -> bool:
        return self.card_cryptogram == self.expected_card_cryptogram

    def _mac(self, cla: int, ins: int, p1: int, p2: int, data: bytes) -> bytes:
        header = bytes(((cla & 0xF0) | 0x04, ins, p1, p2, len(data) + 8))
        self.chaining = cmac(self.s_mac, self.chaining + header + data)
        return header + data + self.chaining[:8]

    def external_authenticate(self, level: int) -> bytes:
        self.level = level
        return self._mac(0x80, 0x82, level, 0x00, self.host_cryptogram)

    def wrap(self, cla: int, ins: int, p1: int, p2: int, data: bytes = b"") -> bytes:
        self.counter += 1
        if self.level & 0x02 and data:
            padded = data + b"\x80" + bytes(-(len(data) + 1) % 16)
            icv = ecb(self.s_enc, self.counter.to_bytes(16, "big"))
            data = cbc(self.s_enc, icv, padded)
        return self._mac(cla, ins, p1, p2, data)


def initialize_update(host_challenge: bytes, key_version: int = 0x00) -> bytes:
    return bytes((0x80, 0x50, key_version, 0x00, 0x08)) + host_challenge + b"\x00"


def install_for_perso(aid: bytes) -> bytes:
    """INSTALL [for personalization] data field."""
    return b"\x00\x00" + bytes((len(aid),)) + aid + bytes(3)
