"""Key ceremony primitives: import a key from 2-3 clear components held by different custodians.

Split knowledge and dual control (PCI Card Production, Logical Security Requirements 5 and 6):
each component's KCV is checked first, by the HSM, against the value its custodian read from
the component form; only then are the components combined by XOR; the final KCV is returned
(and compared with the issuer's expected KCV when one is given). Who acted is the caller's
audit record; here we only refuse one custodian acting as two.

DEV/TEST FALLBACK (SoftHSM): production combines the components inside the HSM
(ceremony_kek.py: wrapped components, unwrapped and XORed by the token) and refuses to start on
a token that cannot (hsm/mechanisms.py). SoftHSM has no XOR of two keys, so in dev/test the
components are XOR-ed here, in process memory, and the result is created as a token object.
Every buffer we own (the components and the combined key) is a bytearray zeroed before
returning; the copy python-pkcs11 makes while packing CKA_VALUE is outside our control.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass

from services.keymgmt.hsm.kcv import Kcv, KcvMethod, kcv_of
from services.keymgmt.hsm.p11 import SymKey, as_key
from services.keymgmt.hsm.session import Hsm, HsmError

log = logging.getLogger(__name__)


class CeremonyError(HsmError):
    pass


class ComponentKcvError(CeremonyError):
    """A component's KCV differs from the one its custodian declared: nothing was created."""


class CeremonyKeyType(StrEnum):
    DES1 = "DES1"  # single DES: the halves of a Visa CVK pair, one HSM step each (cvv.py)
    DES2 = "DES2"
    DES3 = "DES3"
    AES128 = "AES128"
    AES192 = "AES192"
    AES256 = "AES256"


_TYPES: dict[CeremonyKeyType, tuple[KeyType, int]] = {
    CeremonyKeyType.DES1: (KeyType._DES, 8),
    CeremonyKeyType.DES2: (KeyType.DES2, 16),
    CeremonyKeyType.DES3: (KeyType.DES3, 24),
    CeremonyKeyType.AES128: (KeyType.AES, 16),
    CeremonyKeyType.AES192: (KeyType.AES, 24),
    CeremonyKeyType.AES256: (KeyType.AES, 32),
}


class KeyUsage(StrEnum):
    """What an imported key may do in the HSM (one usage per key)."""

    DERIVE = "derive"  # IMK-AC/SMI/SMC, KMC
    ENCRYPT = "encrypt"  # CVK-A/CVK-B (the CVV needs a DES decrypt under CVK-B)
    ENCRYPT_ONLY = "encrypt-only"  # PIN block keys, PVK: nothing here ever decrypts a PIN
    MAC = "mac"
    WRAP = "wrap"  # transport/zone master keys


_USAGE: dict[KeyUsage, MechanismFlag] = {
    KeyUsage.DERIVE: MechanismFlag.DERIVE,
    KeyUsage.ENCRYPT: MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
    KeyUsage.ENCRYPT_ONLY: MechanismFlag.ENCRYPT,
    KeyUsage.MAC: MechanismFlag.SIGN | MechanismFlag.VERIFY,
    KeyUsage.WRAP: MechanismFlag.WRAP | MechanismFlag.UNWRAP,
}

_USAGE_ATTRS: dict[MechanismFlag, Attribute] = {
    MechanismFlag.DERIVE: Attribute.DERIVE,
    MechanismFlag.ENCRYPT: Attribute.ENCRYPT,
    MechanismFlag.DECRYPT: Attribute.DECRYPT,
    MechanismFlag.SIGN: Attribute.SIGN,
    MechanismFlag.VERIFY: Attribute.VERIFY,
    MechanismFlag.WRAP: Attribute.WRAP,
    MechanismFlag.UNWRAP: Attribute.UNWRAP,
}


@dataclass(frozen=True)
class Component:
    """One clear component as a custodian enters it. ``value`` is zeroed once used."""

    value: bytearray = field(repr=False)
    kcv: str
    custodian: str
    kcv_method: KcvMethod | None = None  # AES only; DES components always use the DES method


@dataclass(frozen=True)
class ImportResult:
    label: str
    key_type: CeremonyKeyType
    kcvs: tuple[Kcv, ...]
    component_kcvs: tuple[Kcv, ...]
    custodians: tuple[str, ...]
    parity_adjusted: bool


def _default_method(kt: KeyType) -> KcvMethod:
    return KcvMethod.DES if kt in (KeyType.DES2, KeyType.DES3) else KcvMethod.AES_CMAC


def _template(kt: KeyType, value: bytearray, caps: MechanismFlag) -> dict[Attribute, Any]:
    template: dict[Attribute, Any] = {
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: kt,
        Attribute.VALUE: bytes(value),
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
    }
    for flag, attr in _USAGE_ATTRS.items():
        template[attr] = bool(caps & flag)
    return template


def _component_kcv(hsm: Hsm, kt: KeyType, comp: Component, method: KcvMethod) -> Kcv:
    """KCV of one component, computed by the HSM on a throw-away session object."""
    caps = MechanismFlag.SIGN if method is KcvMethod.AES_CMAC else MechanismFlag.ENCRYPT
    template = _template(kt, comp.value, caps)
    template[Attribute.TOKEN] = False
    tmp = as_key(hsm.session.create_object(template))
    try:
        return kcv_of(tmp, method)
    finally:
        tmp.destroy()


def _odd_parity(buf: bytearray) -> None:
    """DES keys: set the low bit of each byte so the byte has odd parity (FIPS 46-3)."""
    for i, b in enumerate(buf):
        buf[i] = (b & 0xFE) | (1 ^ (bin(b >> 1).count("1") & 1))


def check_component(hsm: Hsm, key_type: CeremonyKeyType, comp: Component) -> Kcv:
    """Check one component as its custodian enters it (HSM worker): length, then its KCV
    against the declared one (ComponentKcvError). The value is left for the combination."""
    kt, length = _TYPES[key_type]
    if len(comp.value) != length:
        raise CeremonyError(f"{key_type} components are {length} bytes")
    method = KcvMethod.DES if kt != KeyType.AES else (comp.kcv_method or _default_method(kt))
    kcv = _component_kcv(hsm, kt, comp, method)
    if not kcv.matches(comp.kcv):
        raise ComponentKcvError(f"component of {comp.custodian}: KCV mismatch")
    return kcv


def import_key_from_components(
    hsm: Hsm,
    label: str,
    key_type: CeremonyKeyType,
    components: Sequence[Component],
    usage: KeyUsage,
    expected_kcv: str | None = None,
) -> ImportResult:
    """Combine 2-3 components into a sensitive, non-extractable token key (HSM worker)."""
    kt, length = _TYPES[key_type]
    combined = bytearray(length)
    try:
        if not 2 <= len(components) <= 3:
            raise CeremonyError("a key is imported from 2 or 3 components")
        custodians = tuple(c.custodian for c in components)
        if len(set(custodians)) != len(custodians) or not all(custodians):
            raise CeremonyError("each component needs its own named custodian")
        if any(len(c.value) != length for c in components):
            raise CeremonyError(f"{key_type} components are {length} bytes")
        hsm.ensure_absent(label)
        checked: list[Kcv] = []
        for index, comp in enumerate(components):
            method = (
                KcvMethod.DES if kt != KeyType.AES else (comp.kcv_method or _default_method(kt))
            )
            kcv = _component_kcv(hsm, kt, comp, method)
            if not kcv.matches(comp.kcv):
                log.warning(
                    "component KCV mismatch",
                    extra={"label": label, "component": index + 1, "custodian": comp.custodian},
                )
                raise ComponentKcvError(f"component {index + 1} ({comp.custodian}): KCV mismatch")
            checked.append(kcv)
        for comp in components:
            for i, b in enumerate(comp.value):
                combined[i] ^= b
        parity = kt != KeyType.AES
        if parity:
            _odd_parity(combined)
        caps = _USAGE[usage]
        template = _template(kt, combined, caps)
        template[Attribute.TOKEN] = True
        template[Attribute.LABEL] = label
        if kt == KeyType.AES:
            template[Attribute.SIGN] = True  # only for the CMAC KCV just below
        # Created already SENSITIVE and not EXTRACTABLE: both are one-way in PKCS#11, so the
        # key is locked from its first instant (no window in which CKA_VALUE is readable).
        key = as_key(hsm.session.create_object(template))
        try:
            kcvs = _final_kcvs(key, kt, caps)
            if expected_kcv is not None and not any(k.matches(expected_kcv) for k in kcvs):
                raise CeremonyError("combined key KCV differs from the expected KCV")
        except BaseException:
            key.destroy()
            raise
        hsm.forget(label)
        log.info("imported key from components", extra={"label": label, "kcv": str(kcvs[0])})
        return ImportResult(label, key_type, kcvs, tuple(checked), custodians, parity)
    finally:
        combined[:] = bytes(length)
        for comp in components:
            comp.value[:] = bytes(len(comp.value))


def _final_kcvs(key: SymKey, kt: KeyType, caps: MechanismFlag) -> tuple[Kcv, ...]:
    if kt != KeyType.AES:
        return (kcv_of(key, KcvMethod.DES),)
    kcvs = (kcv_of(key, KcvMethod.AES_CMAC), kcv_of(key, KcvMethod.AES_ZERO_BLOCK))
    if not caps & MechanismFlag.SIGN:
        key[Attribute.SIGN] = False
    return kcvs


async def aimport_key_from_components(
    hsm: Hsm,
    label: str,
    key_type: CeremonyKeyType,
    components: Sequence[Component],
    usage: KeyUsage,
    expected_kcv: str | None = None,
) -> ImportResult:
    return await hsm.call(
        import_key_from_components, label, key_type, components, usage, expected_kcv
    )
