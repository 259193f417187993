"""PINs in the HSM: ISO 9564-1 formats 0 and 4, Visa PVV, IBM 3624 offset.

Oracles: published vectors (psec's documented examples, ISO 9564-1 field layouts) and psec,
an independent implementation computed in the test with the test-known keys.
"""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pkcs11 import Attribute
from pkcs11.exceptions import PKCS11Error
from psec import pin as psec_pin
from psec import pinblock

from services.keymgmt.emv.pin import (
    PinBlockFormat,
    PinKeys,
    PinPolicy,
    PinVerification,
    encrypt_iso4,
    iso0_block,
    iso4_pan_field,
    issue_pin,
    protect_pin,
    random_pin,
)
from services.keymgmt.hsm.session import Hsm, describe_key
from services.keymgmt.keys.ceremony import CeremonyKeyType, KeyUsage, import_key_from_components
from tests.support.hsm import soft_aes_cmac_kcv, soft_des_kcv, split

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

ISSUER = "pinbank"
PIN_3DES = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")  # test key
PIN_AES = bytes.fromhex("00112233445566778899AABBCCDDEEFF")  # psec's format 4 example key
PVK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")  # psec's PVV/offset example key
BOTH = (PinBlockFormat.ISO0, PinBlockFormat.ISO4)


@pytest.fixture(scope="module")
def pin_keys(hsm: Hsm) -> PinKeys:
    keys = PinKeys.for_issuer(ISSUER)
    assert keys.iso0
    assert keys.iso4
    assert keys.pvk
    for label, value, kt, kcv in (
        (keys.iso0, PIN_3DES, CeremonyKeyType.DES2, "des"),
        (keys.iso4, PIN_AES, CeremonyKeyType.AES128, "aes"),
        (keys.pvk, PVK, CeremonyKeyType.DES2, "des"),
    ):
        first = bytes(range(0x11, 0x11 + len(value)))
        expected = soft_des_kcv(value) if kcv == "des" else soft_aes_cmac_kcv(value)
        comps = split(value, first, kcv)
        hsm.run(import_key_from_components, label, kt, comps, KeyUsage.ENCRYPT_ONLY, expected)
    return keys


def _soft_3des_decrypt(key: bytes, block: bytes) -> bytes:
    return Cipher(TripleDES(key), modes.ECB()).decryptor().update(block)


def _pin(digits: str) -> bytearray:
    return bytearray(int(c) for c in digits)


def test_format0_field_layout_published_vector() -> None:
    # psec's documented example: PIN 1234, PAN 5544332211009966
    assert bytes(iso0_block(_pin("1234"), "5544332211009966")).hex().upper() == "041277CDDEEFF669"
    assert iso4_pan_field("112233445566778899").hex().upper() == "61122334455667788990000000000000"


def test_format0_block_under_the_pin_key_matches_psec(
    hsm: Hsm,
    pin_keys: PinKeys,
) -> None:
    policy = PinPolicy(length=4, formats=(PinBlockFormat.ISO0,))
    issued = hsm.run(protect_pin, _pin("1234"), "5544332211009966", policy, pin_keys)
    label, block = issued.blocks[PinBlockFormat.ISO0]
    assert label == pin_keys.iso0
    assert _soft_3des_decrypt(PIN_3DES, block).hex().upper() == "041277CDDEEFF669"


def test_format4_reproduces_the_published_block(hsm: Hsm, pin_keys: PinKeys) -> None:
    # psec's documented block for PIN 1234, PAN 1234567890123456 under 0011..EEFF. Recover its
    # random fill in software, then let the HSM encipher PIN 1234 with that fill.
    pan, published = "1234567890123456", bytes.fromhex("E4BE5B623AF7E006AC319E5B93544564")
    assert pinblock.decipher_pinblock_iso_4(PIN_AES, published, pan) == "1234"
    aes = Cipher(algorithms.AES(PIN_AES), modes.ECB())
    middle = aes.decryptor().update(published)
    pin_field = aes.decryptor().update(
        bytes(a ^ b for a, b in zip(middle, iso4_pan_field(pan), strict=True))
    )
    assert pin_field[:8].hex().upper() == "441234AAAAAAAAAA"
    assert pin_keys.iso4
    ours = hsm.run(encrypt_iso4, pin_keys.iso4, _pin("1234"), pan, pin_field[8:])
    assert ours == published


def test_visa_pvv_and_ibm3624_offset_published_vectors(
    hsm: Hsm,
    pin_keys: PinKeys,
) -> None:
    pan, pin = "1122334455667788", _pin("4524")
    pvv = PinPolicy(verification=PinVerification.VISA_PVV, pvki="3")
    assert hsm.run(protect_pin, pin, pan, pvv, pin_keys).pvv == "4021"
    ibm = PinPolicy(
        verification=PinVerification.IBM3624_OFFSET,
        decimalisation="1234567890123456",
        validation_offset=0,
        validation_length=16,
    )
    assert hsm.run(protect_pin, pin, pan, ibm, pin_keys).offset == "0000"


@pytest.mark.parametrize("verification", [PinVerification.VISA_PVV, PinVerification.IBM3624_OFFSET])
def test_issued_pins_match_psec(
    hsm: Hsm,
    pin_keys: PinKeys,
    verification: PinVerification,
) -> None:
    """Random PINs from the HSM: both blocks hold the same PIN, and the PVV or offset
    psec computes from that PIN (read back here with the test-known keys) matches."""
    rng = random.Random(3)
    for length in (4, 4, 5, 6, 12):
        pan = "".join(rng.choice("0123456789") for _ in range(rng.choice((13, 16, 19))))
        policy = PinPolicy(length=length, formats=BOTH, verification=verification, pvki="1")
        issued = hsm.run(issue_pin, pan, policy, pin_keys)
        clear0 = _soft_3des_decrypt(PIN_3DES, issued.blocks[PinBlockFormat.ISO0][1])
        pin = pinblock.decode_pinblock_iso_0(clear0, pan)
        block4 = issued.blocks[PinBlockFormat.ISO4][1]
        assert pinblock.decipher_pinblock_iso_4(PIN_AES, block4, pan) == pin
        assert len(pin) == length
        if verification is PinVerification.VISA_PVV:
            assert issued.pvv == psec_pin.generate_visa_pvv(PVK, "1", pin[:4], pan)
        else:
            want = psec_pin.generate_ibm3624_offset(
                PVK, policy.decimalisation, pin, pan, len(pan) - 13, 12, "F"
            )
            assert issued.offset == want
        assert pin not in repr(issued)


def test_format4_blocks_differ_for_the_same_pin(hsm: Hsm, pin_keys: PinKeys) -> None:
    assert pin_keys.iso4
    pan = "4000001234567899"
    blocks = {hsm.run(encrypt_iso4, pin_keys.iso4, _pin("1234"), pan) for _ in range(5)}
    assert len(blocks) == 5  # random fill from the HSM


def test_random_pins_use_every_digit(hsm: Hsm) -> None:
    digits = [d for _ in range(50) for d in hsm.run(random_pin, 12)]
    assert set(digits) == set(range(10))
    assert max(digits.count(d) for d in range(10)) < 120  # 600 draws, ~60 each


def test_pin_keys_are_locked_and_encrypt_only(hsm: Hsm, pin_keys: PinKeys) -> None:
    for label in (pin_keys.iso0, pin_keys.iso4, pin_keys.pvk):
        assert label
        info = hsm.run(describe_key, label)
        assert info.sensitive
        assert not info.extractable

    def may_decrypt(h: Hsm, label: str | None) -> bool:
        assert label
        return bool(h.key(label)[Attribute.DECRYPT])

    assert not any(hsm.run(may_decrypt, label) for label in (pin_keys.iso0, pin_keys.iso4))

    def read_value(h: Hsm) -> object:
        assert pin_keys.pvk
        return h.key(pin_keys.pvk)[Attribute.VALUE]

    with pytest.raises(PKCS11Error):
        hsm.run(read_value)
