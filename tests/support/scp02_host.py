"""An independent SCP02 host for tests (GlobalPlatform Card Specification 2.2 Appendix E, i=15).

Written from the specification, not from vcard/scp02.py or services/keymgmt/gp/secure_channel.py:
3DES from `cryptography`, the C-MAC through pyemv's ISO 9797-1 MAC algorithm 3 (the ICV folded
into the first block, which is what CBC does with an initial value).
"""

from __future__ import annotations

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pyemv.mac import mac_iso9797_3


def _tdes(key: bytes) -> TripleDES:
    return TripleDES(key + key[:8] if len(key) == 16 else key * 3)


def cbc(key: bytes, data: bytes, iv: bytes = bytes(8)) -> bytes:
    enc = Cipher(_tdes(key), modes.CBC(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def ecb(key: bytes, data: bytes) -> bytes:
    enc = Cipher(_tdes(key), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def pad(data: bytes) -> bytes:
    padded = data + b"\x80"
    return padded + bytes(-len(padded) % 8)


def scp02_keys(kmc: bytes, div: bytes) -> tuple[bytes, bytes]:
    """K-ENC, K-MAC of an SCP02 card: CPG202-AES with key numbers 11 and 12."""

    def one(i: int) -> bytes:
        enc = Cipher(algorithms.AES(kmc), modes.ECB()).encryptor()
        block = div[4:10] + bytes((0xF0, i)) + div[4:10] + bytes((0x0F, i))
        return enc.update(block) + enc.finalize()

    return one(0x11), one(0x12)


class Scp02Host:
    def __init__(self, k_enc: bytes, k_mac: bytes, host_challenge: bytes, iu_response: bytes):
        assert len(iu_response) == 28, iu_response.hex()
        assert iu_response[11] == 0x02
        seq, card = iu_response[12:14], iu_response[14:20]
        self.card_cryptogram = iu_response[20:28]
        self.s_enc = cbc(k_enc, b"\x01\x82" + seq + bytes(12))
        self.s_mac = cbc(k_mac, b"\x01\x01" + seq + bytes(12))
        self.expected_card_cryptogram = cbc(self.s_enc, pad(host_challenge + seq + card))[-8:]
        self.host_cryptogram = cbc(self.s_enc, pad(seq + card + host_challenge))[-8:]
        self.icv = bytes(8)
        self.level = 0

    @classmethod
    def from_kmc(cls, kmc: bytes, host_challenge: bytes, iu_response: bytes) -> Scp02Host:
        return cls(*scp02_keys(kmc, iu_response[:10]), host_challenge, iu_response)

    @property
    def card_authentic(self) -> bool:
        return self.card_cryptogram == self.expected_card_cryptogram

    def _mac(self, data: bytes) -> bytes:
        padded = pad(data)
        first = bytes(a ^ b for a, b in zip(padded[:8], self.icv, strict=True))
        mac = bytes(mac_iso9797_3(self.s_mac[:8], self.s_mac[8:], first + padded[8:], 1))
        self.icv = ecb(self.s_mac[:8], mac)
        return mac

    def external_authenticate(self, level: int) -> bytes:
        self.level = level
        mac = self._mac(bytes((0x80, 0x82, level, 0x00, 8)) + self.host_cryptogram)
        return bytes((0x84, 0x82, level, 0x00, 16)) + self.host_cryptogram + mac

    def wrap(self, cla: int, ins: int, p1: int, p2: int, data: bytes = b"") -> bytes:
        mac = self._mac(bytes((cla, ins, p1, p2, len(data))) + data)
        if self.level & 0x02 and data:
            data = cbc(self.s_enc, pad(data))
        return bytes((cla | 0x04, ins, p1, p2, len(data) + 8)) + data + mac
