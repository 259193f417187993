"""EMV key derivation and ARQC in the HSM against published vectors and pyemv (independent)."""

from __future__ import annotations

import pytest
from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass
from pyemv import ac, kd

from services.keymgmt.emv.keys import (
    AIP,
    MkDerivation,
    averify_arqc,
    derive_icc_mk,
    generate_arqc,
    retail_mac,
    verify_arqc,
)
from services.keymgmt.hsm.derive import des3_derive
from services.keymgmt.hsm.p11 import SymKey, as_key
from services.keymgmt.hsm.session import Hsm
from tests.support.hsm import IMK_AC, IMK_SMC, IMK_SMI, IssuerKeys, reveal

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

EXTRACTABLE = {Attribute.EXTRACTABLE: True}
CARDS = [("4761739001010010", "01"), ("5413330089020011", "00"), ("12345678901234567", "01")]
CDOL1 = bytes.fromhex(
    "000000001000"  # amount authorised
    "000000000000"  # amount other
    "0826"  # terminal country
    "0000008000"  # TVR
    "0978"  # currency
    "251124"  # date
    "00"  # type
    "3804823E"  # unpredictable number
)


def _mk_value(h: Hsm, label: str, pan: str, psn: str, option: MkDerivation) -> bytes:
    mk = derive_icc_mk(h, label, pan, psn, option, MechanismFlag(0), EXTRACTABLE)
    try:
        return reveal(h, mk)
    finally:
        mk.destroy()


def _secret(h: Hsm, key_type: KeyType, value: bytes) -> SymKey:
    return as_key(
        h.session.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: key_type,
                Attribute.VALUE: value,
                Attribute.TOKEN: False,
                Attribute.ENCRYPT: True,
            }
        )
    )


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        # pyemv's documented vectors: IMK 0123..3210, PAN 12345678901234567, PSN 01
        (MkDerivation.OPTION_A, "73AD54688CEF2934B0979857E3C719F1"),
        (MkDerivation.OPTION_B, "AD406D7F6D7570916D75E5DCAB8CF737"),
    ],
)
def test_icc_mk_published_vectors(
    hsm: Hsm,
    test_keys: IssuerKeys,
    option: MkDerivation,
    expected: str,
) -> None:
    value = hsm.run(_mk_value, test_keys.imks.ac, "12345678901234567", "01", option)
    assert value.hex().upper() == expected


@pytest.mark.parametrize(("pan", "psn"), CARDS)
def test_icc_mk_option_a_matches_pyemv(
    hsm: Hsm,
    test_keys: IssuerKeys,
    pan: str,
    psn: str,
) -> None:
    imks = test_keys.imks
    for label, imk in ((imks.ac, IMK_AC), (imks.smi, IMK_SMI), (imks.smc, IMK_SMC)):
        value = hsm.run(_mk_value, label, pan, psn, MkDerivation.OPTION_A)
        assert value == kd.derive_icc_mk_a(imk, pan, psn)
        # SoftHSM sets odd parity on derived DES keys (EMV Book 2 A1.4.1 asks for it)
        assert all(bin(b).count("1") % 2 == 1 for b in value)


def test_icc_mk_option_b_long_pan_matches_pyemv(
    hsm: Hsm,
    test_keys: IssuerKeys,
) -> None:
    pan = "6799998900000074324"  # 19 digits
    value = hsm.run(_mk_value, test_keys.imks.ac, pan, "02", MkDerivation.OPTION_B)
    assert value == kd.derive_icc_mk_b(IMK_AC, pan, "02")
    assert value != kd.derive_icc_mk_a(IMK_AC, pan, "02")


def test_common_session_key_published_vector(hsm: Hsm, test_keys: IssuerKeys) -> None:
    # pyemv's documented vector: MK 0123..3210 (our IMK-AC object), R = 001C000000000000
    def run(h: Hsm) -> bytes:
        data = bytes.fromhex("001CF00000000000001C0F0000000000")
        sk = des3_derive(h.key(test_keys.imks.ac), data, MechanismFlag(0), EXTRACTABLE)
        try:
            return reveal(h, sk)
        finally:
            sk.destroy()

    assert hsm.run(run).hex().upper() == "E9FB384AF807B940FEDCEA613461B0C4"


def test_retail_mac_published_ac_vector(hsm: Hsm) -> None:
    # pyemv's documented generate_ac vector (ISO 9797-1 alg 3, padding method 2)
    data = bytes.fromhex("000000002000000000000000012400000080000124110309003804823E58000001")

    def run(h: Hsm) -> bytes:
        sk = _secret(h, KeyType.DES2, bytes.fromhex("AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB"))
        sk_left = _secret(h, KeyType._DES, bytes.fromhex("AAAAAAAAAAAAAAAA"))
        try:
            return retail_mac(sk, sk_left, data)
        finally:
            sk.destroy()
            sk_left.destroy()

    assert hsm.run(run).hex().upper() == "3B76CF10FECD8789"


@pytest.mark.parametrize(("pan", "psn"), CARDS[:2])
@pytest.mark.parametrize("atc", [1, 2, 0x1234])
def test_arqc_matches_pyemv(
    hsm: Hsm,
    test_keys: IssuerKeys,
    pan: str,
    psn: str,
    atc: int,
) -> None:
    atc_b = atc.to_bytes(2, "big")
    mk = kd.derive_icc_mk_a(IMK_AC, pan, psn)
    sk = kd.derive_common_sk(mk, atc_b + bytes(6))
    expected = ac.generate_ac(sk, CDOL1 + AIP + atc_b)
    before = hsm.run(lambda h: h.count_objects())
    got = hsm.run(generate_arqc, test_keys.imks.ac, pan, psn, atc_b, CDOL1)
    assert got == expected
    assert hsm.run(verify_arqc, test_keys.imks.ac, pan, psn, atc_b, CDOL1, expected)
    assert hsm.run(lambda h: h.count_objects()) == before, "session keys must be destroyed"


async def test_arqc_rejections(hsm: Hsm, test_keys: IssuerKeys) -> None:
    pan, psn, atc = "4761739001010010", "01", b"\x00\x07"
    sk = kd.derive_common_sk(kd.derive_icc_mk_a(IMK_AC, pan, psn), atc + bytes(6))
    good = ac.generate_ac(sk, CDOL1 + AIP + atc)
    label = test_keys.imks.ac
    assert await averify_arqc(hsm, label, pan, psn, atc, CDOL1, good)
    bad = bytes([good[0] ^ 1]) + good[1:]
    assert not await averify_arqc(hsm, label, pan, psn, atc, CDOL1, bad)
    assert not await averify_arqc(hsm, label, pan, psn, b"\x00\x08", CDOL1, good)
    assert not await averify_arqc(hsm, label, pan, "02", atc, CDOL1, good)
    other_cdol = CDOL1[:-1] + b"\x00"
    assert not await averify_arqc(hsm, label, pan, psn, atc, other_cdol, good)
    with pytest.raises(ValueError, match="29 bytes"):
        await averify_arqc(hsm, label, pan, psn, atc, CDOL1[:-1], good)
