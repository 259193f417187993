"""PAN vault in the HSM: AES-256-GCM blobs and HMAC-SHA256 lookup hashes."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pkcs11 import Attribute, KeyType, ObjectClass

from services.keymgmt.hsm.kcv import KcvMethod, kcv_computed
from services.keymgmt.hsm.session import Hsm, describe_key, key_label
from services.keymgmt.vault.crypto import (
    SealedPan,
    VaultError,
    adecrypt_pan,
    aencrypt_pan,
    apan_hash,
    decrypt_pan,
    encrypt_pan,
    pan_hash,
    pan_hash_matches,
)
from tests.support.hsm import IssuerKeys

pytestmark = pytest.mark.integration

PAN = "4761739001010010"
KNOWN_AES256 = bytes(range(32))
KNOWN_HMAC = b"\x0b" * 32


def _session_key(h: Hsm, label: str, key_type: KeyType, value: bytes) -> None:
    """TEST ONLY: a key of known value (session object) to check against software."""
    if h.find_key(label) is not None:
        return
    h.session.create_object(
        {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: key_type,
            Attribute.VALUE: value,
            Attribute.LABEL: label,
            Attribute.TOKEN: False,
            Attribute.ENCRYPT: True,
            Attribute.DECRYPT: True,
            Attribute.SIGN: True,
        }
    )


async def test_round_trip_with_random_nonces(hsm: Hsm, test_keys: IssuerKeys) -> None:
    blob1 = await aencrypt_pan(hsm, test_keys.vault_label, PAN, b"testbank")
    blob2 = await aencrypt_pan(hsm, test_keys.vault_label, PAN, b"testbank")
    assert blob1 != blob2
    assert PAN.encode() not in blob1
    assert await adecrypt_pan(hsm, blob1, b"testbank") == PAN
    assert await adecrypt_pan(hsm, blob2, b"testbank") == PAN
    assert SealedPan.from_bytes(blob1).key_label == test_keys.vault_label


def test_tampering_and_wrong_context_fail(hsm: Hsm, test_keys: IssuerKeys) -> None:
    blob = hsm.run(encrypt_pan, test_keys.vault_label, PAN, b"testbank")
    with pytest.raises(VaultError):
        hsm.run(decrypt_pan, blob, b"otherbank")
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(VaultError):
        hsm.run(decrypt_pan, flipped, b"testbank")
    with pytest.raises(VaultError, match="version"):
        hsm.run(decrypt_pan, b"\x02" + blob[1:], b"testbank")
    # a blob cannot redirect decryption to a key that is not a vault key
    sealed = SealedPan.from_bytes(blob)
    forged = SealedPan(test_keys.imks.ac, sealed.nonce, sealed.ciphertext).to_bytes()
    with pytest.raises(VaultError, match="VAULT"):
        hsm.run(decrypt_pan, forged, b"testbank")


def test_gcm_matches_software(hsm: Hsm) -> None:
    label = key_label("kat", "VAULT")
    hsm.run(_session_key, label, KeyType.AES, KNOWN_AES256)
    blob = hsm.run(encrypt_pan, label, PAN, b"ctx")
    sealed = SealedPan.from_bytes(blob)
    clear = AESGCM(KNOWN_AES256).decrypt(sealed.nonce, sealed.ciphertext, sealed.header() + b"ctx")
    assert clear == PAN.encode()
    nonce = bytes(12)
    ct = AESGCM(KNOWN_AES256).encrypt(nonce, PAN.encode(), SealedPan(label, nonce, b"").header())
    assert hsm.run(decrypt_pan, SealedPan(label, nonce, ct).to_bytes()) == PAN


def test_hmac_matches_software(hsm: Hsm) -> None:
    label = key_label("kat", "PANHASH")
    hsm.run(_session_key, label, KeyType.GENERIC_SECRET, KNOWN_HMAC)
    expected = hmac.new(KNOWN_HMAC, PAN.encode(), hashlib.sha256).digest()
    assert hsm.run(pan_hash, label, PAN) == expected
    assert hsm.run(pan_hash_matches, label, PAN, expected)
    assert not hsm.run(pan_hash_matches, label, "4761739001010028", expected)


async def test_generated_hmac_key_is_deterministic(hsm: Hsm, test_keys: IssuerKeys) -> None:
    a = await apan_hash(hsm, test_keys.hmac_label, PAN)
    b = await apan_hash(hsm, test_keys.hmac_label, PAN)
    assert a == b
    assert len(a) == 32
    assert a != await apan_hash(hsm, test_keys.hmac_label, "4761739001010028")


def test_generated_key_check_value_is_its_kcv(hsm: Hsm, test_keys: IssuerKeys) -> None:
    # CKA_CHECK_VALUE (used for generated keys' inventory KCV) equals an HSM-computed KCV.
    info = hsm.run(describe_key, test_keys.vault_label)
    computed = hsm.run(
        lambda h: kcv_computed(h.key(test_keys.vault_label), KcvMethod.AES_ZERO_BLOCK)
    )
    assert info.kcvs == (computed,)


def test_encrypt_refuses_non_pans(hsm: Hsm, test_keys: IssuerKeys) -> None:
    with pytest.raises(ValueError, match="13-19 digits"):
        hsm.run(encrypt_pan, test_keys.vault_label, "4761-7390", b"")
    with pytest.raises(ValueError, match="13-19 digits"):  # 12 digits would not mask
        hsm.run(encrypt_pan, test_keys.vault_label, "476173900101", b"")
