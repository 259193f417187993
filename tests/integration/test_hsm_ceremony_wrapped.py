"""Key components that travel wrapped (RSA-OAEP under the ceremony key-exchange key), on a fresh
SoftHSM token: the custodian's side is written from RFC 8017 with the `cryptography` package,
never with keymgmt's code."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pkcs11 import Attribute, ObjectClass
from pkcs11.exceptions import AttributeSensitive, MechanismInvalid

from services.keymgmt.hsm.mechanisms import LUNA_XOR_BASE_AND_KEY
from services.keymgmt.hsm.p11 import SymKey
from services.keymgmt.hsm.session import Hsm, key_label
from services.keymgmt.keys.ceremony import (
    CeremonyKeyType,
    Component,
    ComponentKcvError,
    KeyUsage,
    import_key_from_components,
)
from services.keymgmt.keys.ceremony_kek import (
    WrappedComponentError,
    combine_in_hsm,
    destroy_components,
    ensure_kek,
    read_component,
    unwrap_component,
)
from tests.support.hsm import soft_aes_cmac_kcv, soft_des_kcv

pytestmark = pytest.mark.integration

KEK = "bureau/CEREMONYKEK/1"
EMV_TEST_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PART1 = bytes.fromhex("1F1F1F1F0E0E0E0E0101010101010101")
PART2 = bytes(a ^ b for a, b in zip(EMV_TEST_KEY, PART1, strict=True))


def wrap(der: bytes, component: bytes) -> bytes:
    """What a custodian's tool does: RSAES-OAEP, SHA-1, MGF1-SHA-1, no label (RFC 8017 7.1)."""
    public = load_der_public_key(der)
    assert isinstance(public, rsa.RSAPublicKey)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    return public.encrypt(component, oaep)


def read(hsm: Hsm, key: SymKey, custodian: str, kcv: str) -> Component:
    del hsm
    return read_component(key, custodian, kcv, None)


@pytest.fixture(scope="module")
def kek_der(hsm: Hsm) -> bytes:
    der, generated = hsm.run(ensure_kek, KEK)
    assert generated
    assert hsm.run(ensure_kek, KEK) == (der, False)  # idempotent
    return der


def test_the_kek_can_only_unwrap_and_never_leaves(hsm: Hsm, kek_der: bytes) -> None:
    def attrs(h: Hsm) -> dict[Attribute, object]:
        key = h.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=KEK)
        wanted = [
            Attribute.UNWRAP,
            Attribute.DECRYPT,
            Attribute.SIGN,
            Attribute.DERIVE,
            Attribute.SENSITIVE,
            Attribute.EXTRACTABLE,
        ]
        return dict(zip(wanted, (key[a] for a in wanted), strict=True))

    got = hsm.run(attrs)
    assert got[Attribute.UNWRAP]
    assert got[Attribute.SENSITIVE]
    assert not any(got[a] for a in (Attribute.DECRYPT, Attribute.SIGN, Attribute.DERIVE))
    assert not got[Attribute.EXTRACTABLE]
    assert load_der_public_key(kek_der).key_size == 3072  # type: ignore[union-attr]


def test_wrapped_des2_components_give_the_published_kcv(hsm: Hsm, kek_der: bytes) -> None:
    """The dev/test route: unwrapped in the HSM, KCV checked there, combined by ceremony.py."""
    comps = []
    for n, part in enumerate((PART1, PART2), start=1):
        key, kcv = hsm.run(
            unwrap_component,
            KEK,
            CeremonyKeyType.DES2,
            wrap(kek_der, part),
            soft_des_kcv(part),
            None,
            readable=True,
        )
        assert kcv.value == soft_des_kcv(part)
        comps.append(hsm.run(read, key, f"cust-{n}", kcv.value))
    label = key_label("wrapbank", "IMK-AC")
    result = hsm.run(
        import_key_from_components, label, CeremonyKeyType.DES2, comps, KeyUsage.DERIVE, "08D7B4"
    )
    assert result.kcvs[0].value == "08D7B4"  # the classic EMV test key's published KCV
    assert all(c.value == bytearray(16) for c in comps)  # zeroed


def test_a_wrong_kcv_or_a_forged_blob_leaves_nothing(hsm: Hsm, kek_der: bytes) -> None:
    before = hsm.run(Hsm.count_objects)
    with pytest.raises(ComponentKcvError):
        hsm.run(
            unwrap_component,
            KEK,
            CeremonyKeyType.DES2,
            wrap(kek_der, PART1),
            soft_des_kcv(PART2),
            None,
            readable=False,
        )
    forged = bytearray(wrap(kek_der, PART1))
    forged[10] ^= 1
    with pytest.raises(WrappedComponentError, match="does not unwrap under"):
        hsm.run(
            unwrap_component,
            KEK,
            CeremonyKeyType.DES2,
            bytes(forged),
            soft_des_kcv(PART1),
            None,
            readable=False,
        )
    assert hsm.run(Hsm.count_objects) == before


def test_an_aes_component_of_the_wrong_length_is_refused(hsm: Hsm, kek_der: bytes) -> None:
    part = bytes(range(24))
    with pytest.raises(Exception, match="AES128 components are 16 bytes"):
        hsm.run(
            unwrap_component,
            KEK,
            CeremonyKeyType.AES128,
            wrap(kek_der, part),
            soft_aes_cmac_kcv(part),
            None,
            readable=False,
        )


def test_the_hsm_route_keeps_components_sensitive_and_asks_the_token_to_xor(
    hsm: Hsm, kek_der: bytes
) -> None:
    """Production's route: the unwrapped components cannot be read, and the combination is one
    C_DeriveKey with the vendor XOR code. SoftHSM does not know it (CKR_MECHANISM_INVALID), so
    nothing is created: the call reached the token with the vendor code."""
    keys = []
    for part in (PART1, PART2):
        key, _ = hsm.run(
            unwrap_component,
            KEK,
            CeremonyKeyType.DES2,
            wrap(kek_der, part),
            soft_des_kcv(part),
            None,
            readable=False,
        )
        keys.append(key)
    with pytest.raises(AttributeSensitive):
        hsm.run(lambda h: keys[0][Attribute.VALUE])
    label = key_label("wrapbank", "IMK-SMI")
    with pytest.raises(MechanismInvalid):
        hsm.run(
            combine_in_hsm,
            label,
            CeremonyKeyType.DES2,
            keys,
            KeyUsage.DERIVE,
            LUNA_XOR_BASE_AND_KEY,
        )
    assert hsm.run(Hsm.find_key, label) is None
    hsm.run(destroy_components, keys)
