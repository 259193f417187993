"""Bureau-owned keys generated inside the HSM, kept in the key inventory: the vault and PAN-hash
keys (made at startup by the keeper), keys a custodian asks for (API), the SIM storage key (made
on the first SIM batch) and the audit checkpoint-signing pair (made on first use).

Replicas serialise on an advisory lock; a key present in the HSM but missing from the inventory
(an earlier run whose row was lost) is adopted. The caller's unit of work commits.
"""

from __future__ import annotations

import logging
from typing import Any

from pkcs11 import Mechanism

from services.keymgmt.hsm.session import (
    BureauKeyKind,
    Hsm,
    HsmError,
    KeyInfo,
    describe_key,
    generate_bureau_key,
)
from services.keymgmt.keys.repository import KeysRepository, key_row
from services.keymgmt.keys.schemas import SigningKeyUnusable
from services.keymgmt.keys.signing import (
    USAGE,
    generate_signing_key,
    key_id,
    public_key_der,
)
from services.keymgmt.settings import KeymgmtSettings

log = logging.getLogger(__name__)

KIND_USAGE = {
    BureauKeyKind.KMC_AES128: "derive",
    BureauKeyKind.VAULT_AES256: "vault",
    BureauKeyKind.PAN_HMAC: "pan-hash",
    BureauKeyKind.SIM_KEK_AES256: "wrap",
    BureauKeyKind.TRANSPORT_AES256: "wrap",
}


def inventory_row(info: KeyInfo, owner: str, usage: str, who: tuple[str, ...]) -> dict[str, Any]:
    kcvs = [(k.value, k.method.value) for k in info.kcvs]
    return key_row(info.label, owner, f"{info.key_type}-{info.bits}", usage, kcvs, "generated", who)


async def ensure_generated_key(
    repo: KeysRepository, hsm: Hsm, label: str, kind: BureauKeyKind, who: str
) -> dict[str, Any]:
    """The inventory row of ``label``, generating the key in the HSM when absent. A key that
    is retired or destroyed, or in the inventory but not in the HSM, is a HsmError."""
    await repo.lock(f"keymgmt.generate.{label}")
    row = await repo.key(label)
    present = await hsm.call(Hsm.find_key, label) is not None
    if row is not None:
        if row["state"] != "active" or not present:
            raise HsmError(f"{label} is {row['state']}{'' if present else ', not in the HSM'}")
        return row
    if present:
        info = await hsm.call(describe_key, label)
    else:
        info = await hsm.call(generate_bureau_key, label, kind)
    await repo.add_key(inventory_row(info, label.split("/")[0], KIND_USAGE[kind], (who,)))
    log.info("bureau key in inventory", extra={"label": label, "generated": not present})
    added = await repo.key(label)
    if added is None:
        raise HsmError(f"{label} could not be recorded")
    return added


def _hmac_kcv(hsm: Hsm, label: str) -> str:
    """An HMAC key has no standard KCV: first 3 bytes of HMAC-SHA256(key, 16 zero bytes)."""
    mac = hsm.key(label).sign(bytes(16), mechanism=Mechanism.SHA256_HMAC)
    return bytes(mac)[:3].hex().upper()


async def ensure_bureau_keys(
    repo: KeysRepository, hsm: Hsm, settings: KeymgmtSettings
) -> list[str]:
    """Generate the vault and PAN-hash keys in the HSM when absent and keep them in the
    inventory (idempotent; replicas serialise on an advisory lock). Returns labels generated.
    The KMC is not among them: it is shared with the card manufacturer, so loaded by ceremony.
    """
    generated: list[str] = []
    wanted = (
        (settings.vault_key_label, BureauKeyKind.VAULT_AES256, "vault"),
        (settings.pan_hash_key_label, BureauKeyKind.PAN_HMAC, "pan-hash"),
    )
    await repo.lock("keymgmt.bureau-keys")
    for label, kind, usage in wanted:
        row = await repo.key(label)
        present = await hsm.call(Hsm.find_key, label) is not None
        if row is not None and (row["state"] != "active" or not present):
            raise HsmError(
                f"bureau key {label} is {row['state']} in the inventory"
                f"{'' if present else ' and absent from the HSM'}: not generating another"
                " (data sealed under it would be lost); restore or rotate it first"
            )
        if row is not None:
            continue
        if present:  # made by an earlier run whose inventory row was lost: adopt it
            info = await hsm.call(describe_key, label)
        else:
            info = await hsm.call(generate_bureau_key, label, kind)
            generated.append(label)
        kcvs = [(k.value, k.method.value) for k in info.kcvs]
        if not kcvs:
            kcvs = [(await hsm.call(_hmac_kcv, label), "HMAC-SHA256-ZERO-BLOCK")]
        key_type, owner = f"{info.key_type}-{info.bits}", label.split("/")[0]
        await repo.add_key(key_row(label, owner, key_type, usage, kcvs, "generated"))
        log.info("bureau key recorded", extra={"label": label, "generated": not present})
    return generated


async def ensure_signing_key(repo: KeysRepository, hsm: Hsm, label: str) -> dict[str, Any] | None:
    """The signing pair's inventory row; generated and inventoried on first use."""
    row = await repo.key(label)
    if row is None:
        await repo.lock("keymgmt.audit-signing-key")
        row = await repo.key(label)  # another replica may have made it meanwhile
    if row is None:
        der = await hsm.call(public_key_der, label)
        if der is None:
            der = await hsm.call(generate_signing_key, label)
        kcv = [(key_id(der)[:6].upper(), "SHA256-SPKI")]
        await repo.add_key(key_row(label, "bureau", "EC-P256", USAGE, kcv, "generated"))
        row = await repo.key(label)
    return row


async def usable_signing_key(row: dict[str, Any] | None, hsm: Hsm, label: str) -> bytes:
    """The public key (DER) of an active signing pair held by the HSM, else SigningKeyUnusable."""
    der = await hsm.call(public_key_der, label)
    if der is None or row is None:
        raise SigningKeyUnusable(f"signing key {label} is in the inventory but not the HSM")
    if row["state"] != "active":
        raise SigningKeyUnusable(f"signing key {label} is {row['state']}")
    return der
