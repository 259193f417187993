"""Card-side cryptography of the virtual card, in software (the card is a separate device).

Schemes, all named in docs/perso-protocol.md:
- CPG202-AES static key diversification from the KMC;
- EMV common session key (EMV 4.3 Book 2 Annex A1.3.1) from a double-length DES master key;
- ISO/IEC 9797-1 MAC algorithm 3 ("retail MAC") with padding method 2 for the ARQC
  (EMV 4.3 Book 2 Annex A1.2.1).
Single DES is TripleDES with K||K||K, which is the same permutation (keying option 3).
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_ENC: Final = 0x01
KEY_MAC: Final = 0x02
KEY_DEK: Final = 0x03
# GlobalPlatform's well-known default test key, used as the bureau's *test* KMC (never in prod).
TEST_KMC: Final = bytes.fromhex("404142434445464748494A4B4C4D4E4F")


def aes_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def aes_ecb_decrypt(key: bytes, data: bytes) -> bytes:
    dec = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    return dec.update(data) + dec.finalize()


def _des3_key(key: bytes) -> bytes:
    if len(key) == 8:
        return key * 3
    if len(key) == 16:
        return key + key[:8]
    if len(key) == 24:
        return key
    raise ValueError(f"DES key must be 8, 16 or 24 bytes, not {len(key)}")


def des3_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    enc = Cipher(TripleDES(_des3_key(key)), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def des_cbc_encrypt(key8: bytes, data: bytes, iv: bytes = bytes(8)) -> bytes:
    if len(key8) != 8:
        raise ValueError("single DES key must be 8 bytes")
    enc = Cipher(TripleDES(key8 * 3), modes.CBC(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def adjust_odd_parity(key: bytes) -> bytes:
    """DES keys carry odd parity in the low bit of every byte (FIPS 46-3)."""
    return bytes((b & 0xFE) | ((bin(b & 0xFE).count("1") + 1) & 1) for b in key)


def cpg202_aes_diversify(kmc: bytes, div_data: bytes, key_id: int) -> bytes:
    """K_i = AES-128-ECB(KMC, d[4:10] || F0 || i || d[4:10] || 0F || i) (scheme CPG202-AES).

    The layout is that of GlobalPlatform's EMV CPG 2.02 diversification, with AES-128 in place
    of 3DES, as docs/perso-protocol.md ("Card static keys") defines it.
    """
    if len(kmc) != 16:
        raise ValueError("KMC must be AES-128 (16 bytes)")
    if len(div_data) != 10:
        raise ValueError("diversification data must be 10 bytes")
    tail = div_data[4:10]
    block = tail + bytes((0xF0, key_id)) + tail + bytes((0x0F, key_id))
    return aes_ecb_encrypt(kmc, block)


def cpg202_aes_keys(kmc: bytes, div_data: bytes) -> tuple[bytes, bytes, bytes]:
    """(K_ENC, K_MAC, K_DEK) of one card."""
    return (
        cpg202_aes_diversify(kmc, div_data, KEY_ENC),
        cpg202_aes_diversify(kmc, div_data, KEY_MAC),
        cpg202_aes_diversify(kmc, div_data, KEY_DEK),
    )


def emv_common_session_key(master_key: bytes, atc: int) -> bytes:
    """EMV 4.3 Book 2 A1.3.1 with R = ATC || 00 00 00 00 00 00 (AC session key).

    SK_L = 3DES(MK)[R0 || R1 || F0 || R3..R7], SK_R = 3DES(MK)[R0 || R1 || 0F || R3..R7].
    """
    if len(master_key) != 16:
        raise ValueError("MK-AC must be a double-length DES key")
    r = atc.to_bytes(2, "big") + bytes(6)
    left = r[:2] + b"\xf0" + r[3:]
    right = r[:2] + b"\x0f" + r[3:]
    return adjust_odd_parity(des3_ecb_encrypt(master_key, left + right))


def pad_method2(data: bytes, block: int = 8) -> bytes:
    """ISO/IEC 9797-1 padding method 2: append 80, then 00s up to a whole block."""
    padded = data + b"\x80"
    return padded + bytes(-len(padded) % block)


def retail_mac(key16: bytes, data: bytes) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3: DES-CBC under K_L, final block through DES3 (K_L, K_R).

    Computed as single-DES CBC under K_L over every block but the last, then 3DES-EDE of the
    last block xor the chaining value, which is the output transformation 3 of the standard.
    """
    if len(key16) != 16:
        raise ValueError("retail MAC key must be 16 bytes")
    padded = pad_method2(data)
    chain = bytes(8)
    if len(padded) > 8:
        chain = des_cbc_encrypt(key16[:8], padded[:-8])[-8:]
    last = bytes(a ^ b for a, b in zip(padded[-8:], chain, strict=True))
    return des3_ecb_encrypt(key16, last)


def arqc(master_key_ac: bytes, atc: int, cdol1: bytes, aip: bytes) -> bytes:
    """ARQC per docs/perso-protocol.md: MAC over CDOL1 data || AIP || ATC with SK(ATC)."""
    session_key = emv_common_session_key(master_key_ac, atc)
    return retail_mac(session_key, cdol1 + aip + atc.to_bytes(2, "big"))
