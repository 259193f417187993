"""Keys derived inside the HSM by enciphering data under a base key (PKCS#11
CKM_DES3_ECB_ENCRYPT_DATA): EMV per-card and session keys (emv/keys.py) and GlobalPlatform SCP02
session keys (gp/scp02.py) both use it, so it lives with the HSM session, below both."""

from __future__ import annotations

from typing import Any

from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag
from pkcs11.constants import DEFAULT

from services.keymgmt.hsm.p11 import SymKey, as_key, encrypt_data_param


def des3_derive(
    base: SymKey,
    data: bytes,
    caps: MechanismFlag,
    extra: dict[Attribute, Any] | None = None,
) -> SymKey:
    """Session key = 3DES-ECB(base, data), made by the HSM (CKM_DES3_ECB_ENCRYPT_DATA).

    8 bytes of data give a single-DES key, 16 a DES2 key, 24 a DES3 key. The template must
    not carry CKA_VALUE_LEN for this mechanism (SoftHSM refuses it), so it is removed.
    """
    key_type = {8: KeyType._DES, 16: KeyType.DES2, 24: KeyType.DES3}[len(data)]
    param, keepalive = encrypt_data_param(data)
    template: dict[Attribute, Any] = {
        Attribute.VALUE_LEN: DEFAULT,
        Attribute.TOKEN: False,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
    }
    template.update(extra or {})
    key = as_key(
        base.derive_key(
            key_type,
            8 * len(data),
            capabilities=caps,
            mechanism=Mechanism.DES3_ECB_ENCRYPT_DATA,
            mechanism_param=param,
            template=template,
        )
    )
    del keepalive
    return key
