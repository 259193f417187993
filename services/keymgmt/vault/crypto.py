"""PAN vault primitives: AES-256-GCM encryption and HMAC-SHA256 lookup hashes inside the HSM.

SoftHSM 2.6.1 supports CKM_AES_GCM (measured), so PANs are sealed with authenticated
encryption (NIST SP 800-38D) under an AES-256 vault key. The 96-bit nonce comes from the HSM's
RNG for every encryption (SP 800-38D section 8.2.2, random construction; rotate the key well
before 2^32 encryptions). The blob names its key, and its header is authenticated as AAD, so a
blob cannot be moved to another key label or context without failing to decrypt.

Blob layout, version 1:
    01 || len(label) (1) || label (UTF-8) || nonce (12) || ciphertext || tag (16)
"""

from __future__ import annotations

import hmac as _hmac
from dataclasses import dataclass

from pkcs11 import Mechanism
from pkcs11.exceptions import PKCS11Error
from pkcs11.mechanisms import GCMParams

from services.keymgmt.hsm.p11 import decrypt, encrypt
from services.keymgmt.hsm.session import Hsm, HsmError

BLOB_V1 = 0x01
NONCE_LEN = 12
TAG_BITS = 128


class VaultError(HsmError):
    """A blob is malformed, or failed authentication (wrong key, context or tampering)."""


@dataclass(frozen=True)
class SealedPan:
    key_label: str
    nonce: bytes
    ciphertext: bytes  # includes the GCM tag

    def header(self) -> bytes:
        label = self.key_label.encode()
        return bytes([BLOB_V1, len(label)]) + label

    def to_bytes(self) -> bytes:
        return self.header() + self.nonce + self.ciphertext

    @classmethod
    def from_bytes(cls, blob: bytes) -> SealedPan:
        if len(blob) < 2 or blob[0] != BLOB_V1:
            raise VaultError("unknown PAN blob version")
        end = 2 + blob[1]
        if len(blob) < end + NONCE_LEN + TAG_BITS // 8 + 1:
            raise VaultError("PAN blob too short")
        return cls(blob[2:end].decode(), blob[end : end + NONCE_LEN], blob[end + NONCE_LEN :])


def _aad(sealed: SealedPan, context: bytes) -> bytes:
    return sealed.header() + context


def encrypt_pan(hsm: Hsm, key_label: str, pan: str, context: bytes = b"") -> bytes:
    """Seal a PAN (HSM worker). ``context`` (e.g. the issuer id) is bound as extra AAD.
    13-19 digits, as intake accepts them and shared.pan.mask_pan masks them."""
    if not pan.isdigit() or not 13 <= len(pan) <= 19:
        raise ValueError("a PAN is 13-19 digits")
    if len(key_label.encode()) > 255:
        raise ValueError("key label too long")
    nonce = hsm.random(NONCE_LEN)
    draft = SealedPan(key_label, nonce, b"")
    params = GCMParams(nonce, _aad(draft, context), TAG_BITS)
    ct = encrypt(hsm.key(key_label), pan.encode("ascii"), Mechanism.AES_GCM, params)
    return SealedPan(key_label, nonce, ct).to_bytes()


def decrypt_pan(hsm: Hsm, blob: bytes, context: bytes = b"") -> str:
    """Open a sealed PAN (HSM worker); any tampering raises VaultError."""
    sealed = SealedPan.from_bytes(blob)
    if sealed.key_label.split("/")[1:2] != ["VAULT"]:
        raise VaultError("a PAN blob must name a VAULT key")
    params = GCMParams(sealed.nonce, _aad(sealed, context), TAG_BITS)
    try:
        clear = decrypt(hsm.key(sealed.key_label), sealed.ciphertext, Mechanism.AES_GCM, params)
    except PKCS11Error as exc:  # SoftHSM reports a bad tag as CKR_GENERAL_ERROR
        raise VaultError("PAN blob failed authentication") from exc
    return clear.decode("ascii")


def seal_bytes(hsm: Hsm, key_label: str, data: bytes, context: bytes) -> bytes:
    """Seal any non-empty bytes (e.g. a cardholder record) exactly as a PAN is sealed: the
    same blob layout, AES-GCM under a VAULT key, ``context`` bound as extra AAD (HSM worker).
    Callers give records and PANs different contexts, so one cannot be opened as the other."""
    if not data:
        raise ValueError("nothing to seal")
    if len(key_label.encode()) > 255:
        raise ValueError("key label too long")
    nonce = hsm.random(NONCE_LEN)
    draft = SealedPan(key_label, nonce, b"")
    params = GCMParams(nonce, _aad(draft, context), TAG_BITS)
    ct = encrypt(hsm.key(key_label), data, Mechanism.AES_GCM, params)
    return SealedPan(key_label, nonce, ct).to_bytes()


def open_sealed(hsm: Hsm, blob: bytes, context: bytes) -> bytes:
    """Open a blob made by seal_bytes (HSM worker); tampering or a wrong context raises."""
    sealed = SealedPan.from_bytes(blob)
    if sealed.key_label.split("/")[1:2] != ["VAULT"]:
        raise VaultError("a sealed blob must name a VAULT key")
    params = GCMParams(sealed.nonce, _aad(sealed, context), TAG_BITS)
    try:
        return decrypt(hsm.key(sealed.key_label), sealed.ciphertext, Mechanism.AES_GCM, params)
    except PKCS11Error as exc:
        raise VaultError("sealed blob failed authentication") from exc


def pan_hash(hsm: Hsm, hmac_label: str, pan: str) -> bytes:
    """Keyed lookup hash HMAC-SHA256(key, PAN) computed in the HSM (generic secret key)."""
    if not pan.isdigit():
        raise ValueError("a PAN is digits")
    return hsm.key(hmac_label).sign(pan.encode("ascii"), mechanism=Mechanism.SHA256_HMAC)


def pan_hash_matches(hsm: Hsm, hmac_label: str, pan: str, digest: bytes) -> bool:
    return _hmac.compare_digest(pan_hash(hsm, hmac_label, pan), digest)


async def aencrypt_pan(hsm: Hsm, key_label: str, pan: str, context: bytes = b"") -> bytes:
    return await hsm.call(encrypt_pan, key_label, pan, context)


async def adecrypt_pan(hsm: Hsm, blob: bytes, context: bytes = b"") -> str:
    return await hsm.call(decrypt_pan, blob, context)


async def apan_hash(hsm: Hsm, hmac_label: str, pan: str) -> bytes:
    return await hsm.call(pan_hash, hmac_label, pan)
