"""Reading what keymgmt's tables hold for an EMV card's script, its QA read-back or its print."""

from __future__ import annotations

from uuid import UUID

from services.keymgmt.emv.card_data import EmvCardRows
from services.keymgmt.emv.cvv import CvkLabels
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


async def print_cvk(repo: KeymgmtRepository, card_id: UUID) -> CvkLabels | None:
    """The CVK pair a card's CVV2 is computed under when its face is printed: the pair its
    values were prepared with while that row lives; after the sensitive authentication data
    is purged (QA passed, vault/retention.py), the issuer's pair its product's profile names,
    so a face reprinted later still carries its CVV2, computed again in the HSM and stored
    nowhere. None: the card was never prepared, or its product has no CVK pair."""
    values = await repo.emv.card_values(card_id)
    if values is not None:
        return CvkLabels(values["cvk_a_label"], values["cvk_b_label"])
    prepared = await repo.perso.prepared(card_id)
    if prepared is None:
        return None
    profile = await repo.emv.product(prepared["issuer_id"], prepared["product_id"])
    if profile is None or not profile.cvv:
        return None
    return CvkLabels.for_issuer(prepared["issuer_id"])
