"""The Hsm wrapper and bureau key generation on a fresh SoftHSM token."""

from __future__ import annotations

import threading

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag
from pkcs11.exceptions import AttributeSensitive, KeyUnextractable

from services.keymgmt.hsm.kcv import KcvMethod
from services.keymgmt.hsm.p11 import as_key
from services.keymgmt.hsm.session import (
    BureauKeyKind,
    Hsm,
    KeyExistsError,
    KeyNotFoundError,
    agenerate_bureau_key,
    describe_key,
    destroy_key,
    generate_bureau_key,
    key_label,
)
from tests.support.hsm import IssuerKeys

pytestmark = pytest.mark.integration


def _try_wrap(h: Hsm, label: str) -> bytes:
    kek = as_key(h.session.generate_key(KeyType.AES, 128, capabilities=MechanismFlag.WRAP))
    try:
        return kek.wrap_key(h.key(label), mechanism=Mechanism.AES_KEY_WRAP)
    finally:
        kek.destroy()


def _read_value(h: Hsm, label: str) -> bytes:
    return bytes(h.key(label)[Attribute.VALUE])


def test_labels_are_scoped_by_issuer() -> None:
    assert key_label("acme", "IMK-AC", 2) == "acme/IMK-AC/2"
    with pytest.raises(ValueError, match="invalid label"):
        key_label("acme/evil", "KMC")
    with pytest.raises(ValueError, match="version"):
        key_label("acme", "KMC", 0)


@pytest.mark.parametrize(
    ("kind", "key_type", "bits"),
    [
        (BureauKeyKind.KMC_AES128, "AES", 128),
        (BureauKeyKind.VAULT_AES256, "AES", 256),
        (BureauKeyKind.PAN_HMAC, "GENERIC_SECRET", 256),
    ],
)
def test_generated_keys_are_sensitive_token_keys(
    hsm: Hsm,
    kind: BureauKeyKind,
    key_type: str,
    bits: int,
) -> None:
    label = key_label("genbank", kind.value)
    info = hsm.run(generate_bureau_key, label, kind)
    assert (info.label, info.key_type, info.bits) == (label, key_type, bits)
    assert info.sensitive
    assert not info.extractable
    assert info.token
    if key_type == "AES":
        methods = {k.method for k in info.kcvs}
        assert methods == {KcvMethod.AES_ZERO_BLOCK, KcvMethod.AES_CMAC}
    with pytest.raises(AttributeSensitive):
        hsm.run(lambda h: h.key(label)[Attribute.VALUE])
    with pytest.raises(KeyUnextractable):
        hsm.run(_try_wrap, label)
    attrs = hsm.run(
        lambda h: h.key(label).get_attributes(
            [Attribute.ALWAYS_SENSITIVE, Attribute.NEVER_EXTRACTABLE, Attribute.PRIVATE]
        )
    )
    assert all(attrs.values())
    # the CMAC-KCV SIGN right is withdrawn from keys that are not MAC keys
    sign = hsm.run(lambda h: h.key(label)[Attribute.SIGN])
    assert sign is (kind is BureauKeyKind.PAN_HMAC)
    with pytest.raises(KeyExistsError):
        hsm.run(generate_bureau_key, label, kind)


def test_master_keys_cannot_leave_the_hsm(hsm: Hsm, test_keys: IssuerKeys) -> None:
    for label in (test_keys.imks.ac, test_keys.kmc_label, test_keys.vault_label):
        with pytest.raises(AttributeSensitive):
            hsm.run(_read_value, label)
        with pytest.raises(KeyUnextractable):
            hsm.run(_try_wrap, label)
        info = hsm.run(describe_key, label)
        assert info.sensitive
        assert not info.extractable


def test_session_is_refused_outside_the_worker(hsm: Hsm) -> None:
    with pytest.raises(RuntimeError, match="worker"):
        _ = hsm.session
    seen: list[str] = []
    hsm.run(lambda h: seen.append(threading.current_thread().name))
    assert seen[0].startswith("hsm")


def test_missing_key(hsm: Hsm) -> None:
    with pytest.raises(KeyNotFoundError):
        hsm.run(lambda h: h.key("nobody/KMC/1"))


def test_key_handles_are_cached(hsm: Hsm, test_keys: IssuerKeys) -> None:
    first = hsm.run(lambda h: h.key(test_keys.kmc_label))
    second = hsm.run(lambda h: h.key(test_keys.kmc_label))
    assert first is second
    assert isinstance(first, pkcs11.SecretKey)


async def test_async_calls_are_serialised(hsm: Hsm) -> None:
    import asyncio

    labels = [key_label("asyncbank", "VAULT", v) for v in range(1, 6)]
    infos = await asyncio.gather(
        *(agenerate_bureau_key(hsm, label, BureauKeyKind.VAULT_AES256) for label in labels)
    )
    assert [i.label for i in infos] == labels
    randoms = await asyncio.gather(*(hsm.call(lambda h: h.random(16)) for _ in range(20)))
    assert len(set(randoms)) == 20


def test_destroy_key(hsm: Hsm) -> None:
    label = key_label("gonebank", "VAULT")
    hsm.run(generate_bureau_key, label, BureauKeyKind.VAULT_AES256)
    hsm.run(destroy_key, label)
    with pytest.raises(KeyNotFoundError):
        hsm.run(describe_key, label)


def test_from_env() -> None:
    env = {"BUREAU_PKCS11_MODULE": "/x.so", "BUREAU_HSM_TOKEN": "bureau", "BUREAU_HSM_PIN": "1"}
    h = Hsm.from_env(env)
    assert "bureau" in repr(h)
    assert "'1'" not in repr(h)
    h.close()
