"""The ceremony key-exchange key in the key inventory (the API's GET /v1/ceremony-kek and the
CLI's `ceremony kek`): generated in the HSM on first use, recorded once."""

from __future__ import annotations

import hashlib
import logging

from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremony_kek import ensure_kek
from services.keymgmt.keys.repository import KeysRepository, key_row

log = logging.getLogger(__name__)


async def ensure_kek_recorded(repo: KeysRepository, hsm: Hsm, label: str, who: str) -> bytes:
    """SubjectPublicKeyInfo (DER) of the ceremony key-exchange key, generated in the HSM and
    recorded in the key inventory on first use (its "KCV" is the SPKI's SHA-256, 3 bytes)."""
    await repo.lock(f"keymgmt.generate.{label}")
    der, generated = await hsm.call(ensure_kek, label)
    if await repo.key(label) is None:
        kcv = hashlib.sha256(der).hexdigest()[:6].upper()
        owner = label.split("/")[0]
        row = key_row(
            label, owner, "RSA-3072", "key-exchange", [(kcv, "SHA-256-SPKI")], "generated", (who,)
        )
        await repo.add_key(row)
    if generated:
        log.info("ceremony key-exchange key generated", extra={"label": label, "by": who})
    return der
