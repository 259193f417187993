"""RSA in the HSM for EMV offline data authentication (HSM-worker functions).

- Long-lived pairs (the test CA, an issuer key): private key on the token, sensitive,
  non-extractable, CKA_SIGN only; public key on the token for its modulus and exponent.
- Signatures are raw RSA (CKM_RSA_X_509) over a block the caller formats: EMV Book 2 recovers
  the whole block with the public key, so no PKCS#1 padding may be added.
- ICC key pairs for the pool: session objects, the private key extractable only to be wrapped
  at once under the pool key with CKM_AES_KEY_WRAP_PAD (RFC 5649, PKCS#8 inside), then destroyed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from pkcs11 import DEFAULT, Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import MultipleObjectsReturned, NoSuchKey

from services.keymgmt.hsm.p11 import SymKey
from services.keymgmt.hsm.session import Hsm, HsmError, KeyExistsError, KeyNotFoundError

if TYPE_CHECKING:
    from pkcs11.types import PrivateKey, SignMixin, UnwrapMixin


@dataclass(frozen=True)
class RsaPublic:
    modulus: bytes
    exponent: bytes

    @property
    def size(self) -> int:
        return len(self.modulus)


def _public_of(public: Any) -> RsaPublic:
    return RsaPublic(bytes(public[Attribute.MODULUS]), bytes(public[Attribute.PUBLIC_EXPONENT]))


def _find(hsm: Hsm, label: str, cls: ObjectClass) -> Any | None:
    try:
        return hsm.session.get_key(object_class=cls, key_type=KeyType.RSA, label=label)
    except NoSuchKey:
        return None
    except MultipleObjectsReturned as exc:
        raise HsmError(f"more than one RSA key labelled {label}") from exc


def rsa_public(hsm: Hsm, label: str) -> RsaPublic | None:
    public = _find(hsm, label, ObjectClass.PUBLIC_KEY)
    return None if public is None else _public_of(public)


def generate_rsa_pair(hsm: Hsm, label: str, bits: int, exponent: int = 3) -> RsaPublic:
    """A token key pair whose private key can only sign (CA or issuer key)."""
    if rsa_public(hsm, label) is not None or _find(hsm, label, ObjectClass.PRIVATE_KEY):
        raise KeyExistsError(label)
    public, _ = hsm.session.generate_keypair(
        KeyType.RSA,
        bits,
        label=label,
        store=True,
        public_template={Attribute.PUBLIC_EXPONENT: _exponent_bytes(exponent)},
        private_template={
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
            Attribute.DECRYPT: False,
            Attribute.UNWRAP: False,
        },
    )
    return _public_of(public)


def _exponent_bytes(exponent: int) -> bytes:
    return exponent.to_bytes((exponent.bit_length() + 7) // 8, "big")


def rsa_raw_sign(hsm: Hsm, label: str, block: bytes) -> bytes:
    """RSA private operation on a formatted block (Book 2 signature), CKM_RSA_X_509."""
    private = _find(hsm, label, ObjectClass.PRIVATE_KEY)
    if private is None:
        raise KeyNotFoundError(label)
    return raw_sign(private, block)


def raw_sign(private: Any, block: bytes) -> bytes:
    signature = cast("SignMixin", private).sign(block, mechanism=Mechanism.RSA_X_509)
    return bytes(signature).rjust(len(block), b"\x00")


# -- the ICC key pool -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PooledPair:
    public: RsaPublic
    wrapped: bytes  # PKCS#8 under the pool key, CKM_AES_KEY_WRAP_PAD


def generate_pooled_pair(hsm: Hsm, pool_key: SymKey, bits: int, exponent: int = 3) -> PooledPair:
    """One ICC key pair generated in the HSM, its private key leaving only wrapped."""
    public, private = hsm.session.generate_keypair(
        KeyType.RSA,
        bits,
        store=False,
        public_template={Attribute.PUBLIC_EXPONENT: _exponent_bytes(exponent)},
        private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True},
    )
    try:
        wrapped = pool_key.wrap_key(private, mechanism=Mechanism.AES_KEY_WRAP_PAD)
        return PooledPair(_public_of(public), bytes(wrapped))
    finally:
        private.destroy()
        public.destroy()


def unwrap_private(kek: SymKey, wrapped: bytes, extractable: bool) -> Any:
    """A session RSA private key from its RFC 5649 wrap (sensitive; extractable only to be
    re-wrapped). python-pkcs11's template sets every usage attribute; a private key has no
    ENCRYPT/VERIFY/WRAP, so those are left out."""
    template: dict[Attribute, Any] = {
        Attribute.ENCRYPT: DEFAULT,
        Attribute.VERIFY: DEFAULT,
        Attribute.WRAP: DEFAULT,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: extractable,
    }
    return cast("UnwrapMixin", kek).unwrap_key(
        ObjectClass.PRIVATE_KEY,
        KeyType.RSA,
        wrapped,
        mechanism=Mechanism.AES_KEY_WRAP_PAD,
        capabilities=MechanismFlag.SIGN,
        template=template,
    )


def rewrap_private(pool_key: SymKey, wrapped: bytes, kek: SymKey) -> bytes:
    """The pool's wrap of a private key re-wrapped under another AES key (a card's K_DEK),
    both inside the HSM; the session copy is destroyed."""
    private = unwrap_private(pool_key, wrapped, extractable=True)
    try:
        return bytes(
            kek.wrap_key(cast("PrivateKey", private), mechanism=Mechanism.AES_KEY_WRAP_PAD)
        )
    finally:
        private.destroy()


def sign_with_wrapped(pool_key: SymKey, wrapped: bytes, block: bytes) -> bytes:
    """Raw RSA with a pooled private key (tests and QA checks of a card's key)."""
    private = unwrap_private(pool_key, wrapped, extractable=False)
    try:
        return raw_sign(private, block)
    finally:
        private.destroy()
