"""An independent MILENAGE (3GPP TS 35.206) on SoftHSM's AES, to check vcard's own."""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def _aes(key: bytes, block: bytes) -> bytes:
    return Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(block)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _rot(x: bytes, r_bits: int) -> bytes:
    n = r_bits // 8
    return x[n:] + x[:n]


def milenage(k: bytes, opc: bytes, rand: bytes, sqn: bytes, amf: bytes) -> dict[str, str]:
    """TS 35.206 with r1=64, r2=0, r3=32, r4=64, r5=96 and c1..c5 = 0, 1, 2, 4, 8."""
    temp = _aes(k, _xor(rand, opc))
    in1 = sqn + amf + sqn + amf
    out1 = _xor(_aes(k, _xor(_xor(temp, _rot(_xor(in1, opc), 64)), bytes(16))), opc)

    def out(r: int, c: int) -> bytes:
        cst = bytes(15) + bytes([c])
        return _xor(_aes(k, _xor(_rot(_xor(temp, opc), r), cst)), opc)

    out2, out3, out4, out5 = out(0, 1), out(32, 2), out(64, 4), out(96, 8)
    return {
        "f1": out1[:8].hex(),
        "f1*": out1[8:].hex(),
        "f2": out2[8:].hex(),
        "f5": out2[:6].hex(),
        "f3": out3.hex(),
        "f4": out4.hex(),
        "f5*": out5[:6].hex(),
    }
