"""A card's static keys, scheme CPG202-AES (docs/perso-protocol.md "Card identity"): the
GlobalPlatform EMV CPG 2.02 diversification layout applied with AES-128-ECB under the bureau KMC,
    K_i = AES-128-ECB(KMC, d[4:10] || F0 || i || d[4:10] || 0F || i),  i = 01 ENC, 02 MAC, 03 DEK,
derived in the HSM with CKM_AES_ECB_ENCRYPT_DATA (HSM-worker functions).
"""

from __future__ import annotations

from typing import Any

from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag

from services.keymgmt.hsm.kcv import Kcv, KcvMethod, kcv_computed
from services.keymgmt.hsm.p11 import SymKey, as_key
from services.keymgmt.hsm.session import Hsm

SCHEME = "CPG202-AES"
STATIC_KEYS = {"ENC": 1, "MAC": 2, "DEK": 3}


def cpg202_aes_block(div: bytes, i: int) -> bytes:
    if len(div) != 10:
        raise ValueError("key diversification data is 10 bytes")
    return div[4:10] + bytes([0xF0, i]) + div[4:10] + bytes([0x0F, i])


def derive_static_key(
    hsm: Hsm,
    kmc_label: str,
    div: bytes,
    i: int,
    caps: MechanismFlag,
    extra: dict[Attribute, Any] | None = None,
) -> SymKey:
    template: dict[Attribute, Any] = {
        Attribute.TOKEN: False,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
    }
    template.update(extra or {})
    key = hsm.key(kmc_label).derive_key(
        KeyType.AES,
        128,
        capabilities=caps,
        mechanism=Mechanism.AES_ECB_ENCRYPT_DATA,
        mechanism_param=cpg202_aes_block(div, i),
        template=template,
    )
    return as_key(key)


def card_static_key_kcvs(hsm: Hsm, kmc_label: str, div: bytes) -> dict[str, tuple[Kcv, Kcv]]:
    """KCVs (CMAC and zero-block methods) of the card's ENC/MAC/DEK keys, for tests and QA."""
    out: dict[str, tuple[Kcv, Kcv]] = {}
    for name, i in STATIC_KEYS.items():
        key = derive_static_key(hsm, kmc_label, div, i, MechanismFlag.SIGN | MechanismFlag.ENCRYPT)
        try:
            out[name] = (
                kcv_computed(key, KcvMethod.AES_CMAC),
                kcv_computed(key, KcvMethod.AES_ZERO_BLOCK),
            )
        finally:
            key.destroy()
    return out
