"""Key ceremony: import from components with KCV checks, on a fresh SoftHSM token."""

from __future__ import annotations

import pytest
from pkcs11 import Attribute
from pkcs11.exceptions import AttributeSensitive

from services.keymgmt.hsm.kcv import KcvMethod
from services.keymgmt.hsm.session import Hsm, KeyExistsError, key_label
from services.keymgmt.keys.ceremony import (
    CeremonyError,
    CeremonyKeyType,
    Component,
    ComponentKcvError,
    KeyUsage,
    aimport_key_from_components,
    import_key_from_components,
)
from tests.support.hsm import soft_aes_cmac_kcv, soft_aes_zero_kcv, soft_des_kcv, split

pytestmark = pytest.mark.integration

EMV_TEST_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
EMV_TEST_KEY_KCV = "08D7B4"  # the published KCV of the classic EMV test key


def _objects(h: Hsm) -> int:
    return h.count_objects()


def test_des2_from_two_components_published_kcv(hsm: Hsm) -> None:
    comps = split(EMV_TEST_KEY, bytes.fromhex("F1F1F1F1F1F1F1F1E0E0E0E0E0E0E0E0"), "des")
    values = [c.value for c in comps]
    result = hsm.run(
        import_key_from_components,
        key_label("cerbank", "IMK-AC"),
        CeremonyKeyType.DES2,
        comps,
        KeyUsage.DERIVE,
        EMV_TEST_KEY_KCV,
    )
    assert [k.value for k in result.kcvs] == [EMV_TEST_KEY_KCV]
    assert soft_des_kcv(EMV_TEST_KEY) == EMV_TEST_KEY_KCV
    assert result.kcvs[0].method is KcvMethod.DES
    assert [k.value for k in result.component_kcvs] == [c.kcv for c in comps]
    assert result.custodians == ("alice", "bob")
    assert all(v == bytearray(16) for v in values), "component buffers must be wiped"
    attrs = hsm.run(
        lambda h: h.key(result.label).get_attributes(
            [Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.DERIVE, Attribute.ENCRYPT]
        )
    )
    assert attrs == {
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.DERIVE: True,
        Attribute.ENCRYPT: False,
    }
    with pytest.raises(AttributeSensitive):
        hsm.run(lambda h: h.key(result.label)[Attribute.VALUE])


def test_des3_from_three_components(hsm: Hsm) -> None:
    key = bytes.fromhex("0123456789ABCDEFFEDCBA987654321089ABCDEF01234567")
    c1 = bytes(range(24))
    c2 = bytes(range(100, 124))
    c3 = bytes(a ^ b ^ c for a, b, c in zip(key, c1, c2, strict=True))
    comps = [
        Component(bytearray(v), soft_des_kcv(v), who)
        for v, who in ((c1, "alice"), (c2, "bob"), (c3, "carol"))
    ]
    result = hsm.run(
        import_key_from_components,
        key_label("cerbank", "CVK"),
        CeremonyKeyType.DES3,
        comps,
        KeyUsage.ENCRYPT,
    )
    assert result.kcvs[0].value == soft_des_kcv(key)
    assert result.parity_adjusted


def test_aes_both_kcv_methods(hsm: Hsm) -> None:
    key = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")  # FIPS 197 / SP 800-38B key
    comps = split(key, bytes(16), "aes")
    comps[1] = Component(
        comps[1].value, soft_aes_zero_kcv(bytes(comps[1].value)), "bob", KcvMethod.AES_ZERO_BLOCK
    )
    comps[0] = Component(bytearray(16), soft_aes_cmac_kcv(bytes(16)), "alice")
    result = hsm.run(
        import_key_from_components,
        key_label("cerbank", "KMC"),
        CeremonyKeyType.AES128,
        comps,
        KeyUsage.DERIVE,
        soft_aes_zero_kcv(key),
    )
    by_method = {k.method: k.value for k in result.kcvs}
    assert by_method == {
        KcvMethod.AES_CMAC: soft_aes_cmac_kcv(key),
        KcvMethod.AES_ZERO_BLOCK: soft_aes_zero_kcv(key),
    }
    assert [k.method for k in result.component_kcvs] == [
        KcvMethod.AES_CMAC,
        KcvMethod.AES_ZERO_BLOCK,
    ]
    assert not result.parity_adjusted
    # SIGN was only lent for the CMAC KCV
    assert hsm.run(lambda h: h.key(result.label)[Attribute.SIGN]) is False


def test_wrong_component_kcv_is_refused_and_leaves_nothing(hsm: Hsm) -> None:
    label = key_label("cerbank", "IMK-SMI")
    comps = split(EMV_TEST_KEY, bytes(range(16)), "des")
    comps[1] = Component(comps[1].value, "000000", "bob")
    before = hsm.run(_objects)
    with pytest.raises(ComponentKcvError, match=r"component 2 \(bob\)"):
        hsm.run(import_key_from_components, label, CeremonyKeyType.DES2, comps, KeyUsage.DERIVE)
    assert hsm.run(_objects) == before
    assert hsm.run(lambda h: h.find_key(label)) is None
    assert all(c.value == bytearray(16) for c in comps)


def test_wrong_final_kcv_destroys_the_key(hsm: Hsm) -> None:
    label = key_label("cerbank", "IMK-SMC")
    before = hsm.run(_objects)
    with pytest.raises(CeremonyError, match="expected KCV"):
        hsm.run(
            import_key_from_components,
            label,
            CeremonyKeyType.DES2,
            split(EMV_TEST_KEY, bytes(range(16)), "des"),
            KeyUsage.DERIVE,
            "ABCDEF",
        )
    assert hsm.run(_objects) == before
    assert hsm.run(lambda h: h.find_key(label)) is None


@pytest.mark.parametrize(
    ("custodians", "message"),
    [(("alice", "alice"), "own named custodian"), (("alice", ""), "own named custodian")],
)
def test_dual_control(hsm: Hsm, custodians: tuple[str, str], message: str) -> None:
    comps = split(EMV_TEST_KEY, bytes(range(16)), "des")
    comps = [Component(c.value, c.kcv, who) for c, who in zip(comps, custodians, strict=True)]
    with pytest.raises(CeremonyError, match=message):
        hsm.run(
            import_key_from_components,
            key_label("cerbank", "DUAL"),
            CeremonyKeyType.DES2,
            comps,
            KeyUsage.DERIVE,
        )


def test_one_component_is_not_enough(hsm: Hsm) -> None:
    comps = split(EMV_TEST_KEY, bytes(range(16)), "des")[:1]
    with pytest.raises(CeremonyError, match="2 or 3"):
        hsm.run(
            import_key_from_components,
            key_label("cerbank", "ONE"),
            CeremonyKeyType.DES2,
            comps,
            KeyUsage.DERIVE,
        )


async def test_existing_label_is_refused(hsm: Hsm) -> None:
    label = key_label("cerbank2", "IMK-AC")
    await aimport_key_from_components(
        hsm, label, CeremonyKeyType.DES2, split(EMV_TEST_KEY, bytes(16), "des"), KeyUsage.DERIVE
    )
    with pytest.raises(KeyExistsError):
        await aimport_key_from_components(
            hsm,
            label,
            CeremonyKeyType.DES2,
            split(EMV_TEST_KEY, bytes(16), "des"),
            KeyUsage.DERIVE,
        )
