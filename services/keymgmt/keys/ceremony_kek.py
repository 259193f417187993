"""Key components that travel wrapped, and their combination inside the HSM (HSM-worker
functions; the ceremony workflow is ceremonies.py's).

The key-exchange key (KEK) is an RSA-3072 pair generated inside the HSM: its private half may
only unwrap (CKA_UNWRAP; no decrypt, sign or derive), is sensitive and never leaves. Each
custodian (or the issuer's HSM) encrypts a component with RSAES-OAEP (RFC 8017 section 7.1)
under the published public key, SHA-1 and MGF1-SHA-1 with an empty label (SoftHSM 2.6.1
unwraps OAEP with SHA-1 only; measured), and the HSM unwraps it with C_UnwrapKey into a
session key object whose KCV it computes.

Combination (PCI PIN / Card Production: components combined inside the HSM): each unwrapped
component stays a sensitive, non-extractable session object and the HSM XORs them with
C_DeriveKey under the vendor mechanism "XOR base and key" (its parameter is the
CK_OBJECT_HANDLE of the other key; PKCS#11 itself has none, so the code is a setting). On a
token without it (SoftHSM) only dev/test may combine: the component is unwrapped as a
non-sensitive session object, read into a bytearray and handed to ceremony.py's XOR (zeroed
there); production never starts on such a token (hsm/mechanisms.py).
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pkcs11 import MGF, Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.constants import DEFAULT
from pkcs11.exceptions import NoSuchKey, PKCS11Error

from services.keymgmt.hsm.kcv import Kcv, KcvMethod, kcv_computed
from services.keymgmt.hsm.p11 import SymKey, as_key
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremony import (
    _TYPES,
    _USAGE,
    CeremonyError,
    CeremonyKeyType,
    Component,
    ComponentKcvError,
    ImportResult,
    KeyUsage,
    _default_method,
    _final_kcvs,
)

log = logging.getLogger(__name__)

KEK_BITS = 3072
KEK_ALGORITHM = "RSAES-OAEP (RFC 8017), SHA-1, MGF1-SHA-1, empty label"
_OAEP = (Mechanism.SHA_1, MGF.SHA1, None)


class WrappedComponentError(CeremonyError):
    """The HSM could not unwrap the component under the key-exchange key."""


def kek_public_der(hsm: Hsm, label: str) -> bytes | None:
    """SubjectPublicKeyInfo (DER) of the KEK, or None when absent (HSM worker)."""
    try:
        public = hsm.session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=label)
    except NoSuchKey:
        return None
    n = int.from_bytes(bytes(public[Attribute.MODULUS]), "big")
    e = int.from_bytes(bytes(public[Attribute.PUBLIC_EXPONENT]), "big")
    spki = RSAPublicNumbers(e, n).public_key()
    return spki.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def ensure_kek(hsm: Hsm, label: str) -> tuple[bytes, bool]:
    """(SPKI DER, generated now) of the KEK pair; generated on the token when absent."""
    der = kek_public_der(hsm, label)
    if der is not None:
        return der, False
    hsm.session.generate_keypair(
        KeyType.RSA,
        KEK_BITS,
        store=True,
        label=label,
        public_template={
            Attribute.TOKEN: True,
            Attribute.WRAP: True,
            Attribute.ENCRYPT: False,
            Attribute.VERIFY: False,
        },
        private_template={
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.UNWRAP: True,
            Attribute.DECRYPT: False,
            Attribute.SIGN: False,
            Attribute.SIGN_RECOVER: False,
            Attribute.DERIVE: False,
        },
    )
    log.info("generated ceremony key-exchange key", extra={"label": label})
    der = kek_public_der(hsm, label)
    if der is None:
        raise CeremonyError(f"key-exchange key {label} not found after generation")
    return der, True


def _kcv_method(kt: KeyType, method: KcvMethod | None) -> KcvMethod:
    return KcvMethod.DES if kt != KeyType.AES else (method or _default_method(kt))


def unwrap_component(
    hsm: Hsm,
    kek_label: str,
    key_type: CeremonyKeyType,
    wrapped: bytes,
    declared_kcv: str,
    kcv_method: KcvMethod | None,
    *,
    readable: bool,
) -> tuple[SymKey, Kcv]:
    """C_UnwrapKey(RSA-OAEP) of one component into a session object, its KCV checked by the
    HSM against the custodian's (ComponentKcvError destroys it). ``readable``: the dev/test
    fallback's non-sensitive object; otherwise sensitive, non-extractable, derive-only but for
    the KCV."""
    kt, length = _TYPES[key_type]
    try:
        kek = hsm.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=kek_label)
    except NoSuchKey as exc:
        raise CeremonyError(f"no key-exchange key {kek_label} in the HSM") from exc
    template: dict[Attribute, Any] = {
        Attribute.TOKEN: False,
        Attribute.SENSITIVE: not readable,
        Attribute.EXTRACTABLE: readable,  # SoftHSM reads CKA_VALUE only if extractable too
        Attribute.DERIVE: True,
        Attribute.ENCRYPT: kt != KeyType.AES,  # the DES KCV method enciphers a zero block
        Attribute.SIGN: kt == KeyType.AES,  # AES CMAC KCV
    }
    try:
        obj = cast(Any, kek).unwrap_key(
            ObjectClass.SECRET_KEY,
            kt,
            wrapped,
            mechanism=Mechanism.RSA_PKCS_OAEP,
            mechanism_param=_OAEP,
            template=template,
        )
    except PKCS11Error as exc:
        raise WrappedComponentError(
            f"the component does not unwrap under {kek_label} ({exc.__class__.__name__})"
        ) from exc
    key = as_key(obj)
    try:
        if kt == KeyType.AES and int(key[Attribute.VALUE_LEN]) != length:
            raise CeremonyError(f"{key_type} components are {length} bytes")
        method = _kcv_method(kt, kcv_method)
        kcv = kcv_computed(key, method)
        if not kcv.matches(declared_kcv):
            raise ComponentKcvError("KCV mismatch")
    except BaseException:
        key.destroy()
        raise
    return key, kcv


def read_component(
    key: SymKey, custodian: str, declared: str, method: KcvMethod | None
) -> Component:
    """DEV/TEST FALLBACK: the clear value of a readable unwrapped component, for ceremony.py's
    XOR (which zeroes it); the session object is destroyed."""
    try:
        return Component(bytearray(key[Attribute.VALUE]), declared, custodian, method)
    finally:
        key.destroy()


def destroy_components(hsm: Hsm, keys: Sequence[SymKey]) -> None:
    del hsm
    for key in keys:
        key.destroy()


def _vendor_mechanism(code: int) -> Mechanism:
    """A vendor CKM_ code as python-pkcs11 0.10 needs it (it accepts only Mechanism members,
    and its enum has no vendor codes): an int of the Mechanism type, passed through as is."""
    mechanism: Mechanism = int.__new__(Mechanism, code)
    return mechanism


def _xor(
    base: SymKey, other: SymKey, kt: KeyType, length: int, code: int, template: dict[Attribute, Any]
) -> SymKey:
    handle = ctypes.c_ulong(cast(int, other.handle))
    if kt != KeyType.AES:
        template = {**template, Attribute.VALUE_LEN: DEFAULT}
    return as_key(
        base.derive_key(
            kt,
            8 * length,
            mechanism=_vendor_mechanism(code),
            mechanism_param=bytes(handle),
            template=template,
        )
    )


def combine_in_hsm(
    hsm: Hsm,
    label: str,
    key_type: CeremonyKeyType,
    parts: Sequence[SymKey],
    usage: KeyUsage,
    xor_mechanism: int,
) -> tuple[SymKey, tuple[Kcv, ...]]:
    """XOR 2-3 unwrapped components inside the HSM into a sensitive, non-extractable token key
    (HSM worker). Intermediate objects are destroyed; the components are the caller's."""
    kt, length = _TYPES[key_type]
    hsm.ensure_absent(label)
    caps = _USAGE[usage]
    final: dict[Attribute, Any] = {
        Attribute.TOKEN: True,
        Attribute.LABEL: label,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.DERIVE: bool(caps & MechanismFlag.DERIVE),
        Attribute.ENCRYPT: bool(caps & MechanismFlag.ENCRYPT),
        Attribute.DECRYPT: bool(caps & MechanismFlag.DECRYPT),
        Attribute.SIGN: bool(caps & MechanismFlag.SIGN) or kt == KeyType.AES,
        Attribute.VERIFY: bool(caps & MechanismFlag.VERIFY),
        Attribute.WRAP: bool(caps & MechanismFlag.WRAP),
        Attribute.UNWRAP: bool(caps & MechanismFlag.UNWRAP),
    }
    step: dict[Attribute, Any] = {
        Attribute.TOKEN: False,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.DERIVE: True,
    }
    made: list[SymKey] = []
    try:
        acc = parts[0]
        for index, other in enumerate(parts[1:], start=2):
            acc = _xor(
                acc, other, kt, length, xor_mechanism, final if index == len(parts) else step
            )
            made.append(acc)
        kcvs = _final_kcvs(acc, kt, caps)
    except BaseException:
        for obj in made:
            obj.destroy()
        raise
    for obj in made[:-1]:
        obj.destroy()
    hsm.forget(label)
    return acc, kcvs


def import_unwrapped(
    hsm: Hsm,
    label: str,
    key_type: CeremonyKeyType,
    parts: Sequence[SymKey],
    custodians: tuple[str, ...],
    component_kcvs: tuple[Kcv, ...],
    usage: KeyUsage,
    xor_mechanism: int,
    expected_kcv: str | None,
) -> ImportResult:
    """The HSM route of a ceremony whose components arrived wrapped (HSM worker)."""
    try:
        try:
            key, kcvs = combine_in_hsm(hsm, label, key_type, parts, usage, xor_mechanism)
        except PKCS11Error as exc:
            raise CeremonyError(
                f"the HSM refused to combine the components ({exc.__class__.__name__})"
            ) from exc
        if expected_kcv is not None and not any(k.matches(expected_kcv) for k in kcvs):
            key.destroy()
            raise CeremonyError("combined key KCV differs from the expected KCV")
    finally:
        destroy_components(hsm, parts)
    log.info("combined key components in the HSM", extra={"label": label, "kcv": str(kcvs[0])})
    parity = False  # the HSM's own rule for DES parity of a XOR of components
    return ImportResult(label, key_type, kcvs, component_kcvs, custodians, parity)
