"""Reading what keymgmt's tables hold for an EMV card's script or its QA read-back."""

from __future__ import annotations

from uuid import UUID

from services.keymgmt.emv.card_data import EmvCardRows
from services.keymgmt.repository import KeymgmtRepository


async def emv_card_rows(
    repo: KeymgmtRepository, card_id: UUID, issuer_id: str, product_id: str
) -> EmvCardRows | None:
    """An EMV card's profile rows; None when its product has no EMV profile."""
    profile = await repo.emv.product(issuer_id, product_id)
    if profile is None or profile.emv is None:
        return None
    oda = await repo.oda.card_oda(card_id)
    pool = issuer = None
    if oda is not None and oda["pool_id"] is not None:
        pool = await repo.oda.pool_pair(oda["pool_id"])
    if oda is not None and oda["issuer_key_label"]:
        issuer = await repo.oda.issuer_certificate(issuer_id, oda["issuer_key_label"])
    offline = await repo.oda.offline_pin(card_id)
    values = await repo.emv.card_values(card_id)
    return EmvCardRows(profile.emv, oda, pool, issuer, offline, values)
