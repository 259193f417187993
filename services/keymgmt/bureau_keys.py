"""Bureau-owned keys generated inside the HSM on request (API), kept in the key inventory.

Used by the ceremony API (a custodian asks for a transport key) and the SIM batches (the SIM
storage key, made on first use). Replicas serialise on an advisory lock; a key present in
the HSM but missing from this inventory (an earlier run whose row was lost) is adopted.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.keymgmt.hsm import (
    BureauKeyKind,
    Hsm,
    HsmError,
    KeyInfo,
    describe_key,
    generate_bureau_key,
)
from services.keymgmt.repository import KeymgmtRepository, key_row

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
    conn: AsyncConnection, hsm: Hsm, label: str, kind: BureauKeyKind, who: str
) -> dict[str, Any]:
    """The inventory row of ``label``, generating the key in the HSM when absent. A key that
    is retired or destroyed, or in the inventory but not in the HSM, is a HsmError."""
    repo = KeymgmtRepository(conn)
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
