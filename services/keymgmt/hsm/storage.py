"""Bureau storage keys: AES-256 token keys that only wrap and unwrap, holding secrets that
wait in keymgmt's tables for a card's personalization (the ICC key pool, offline PINs)."""

from __future__ import annotations

from pkcs11 import Attribute, KeyType, MechanismFlag

from services.keymgmt.hsm.p11 import SymKey, as_key
from services.keymgmt.hsm.session import Hsm

ICC_POOL_KEY = "bureau/ICCPOOL/1"
PIN_STORAGE_KEY = "bureau/PINSTORE/1"


def ensure_storage_key(hsm: Hsm, label: str) -> SymKey:
    """The storage key, generated in the HSM on first use (sensitive, non-extractable)."""
    found = hsm.find_key(label)
    if found is not None:
        return found
    hsm.session.generate_key(
        KeyType.AES,
        256,
        label=label,
        store=True,
        capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP,
        template={
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
        },
    )
    hsm.forget(label)
    return as_key(hsm.key(label))
