"""The vault record: sealing a cardholder record under the HSM vault key, opening it again
(HSM-worker functions: run them with ``await hsm.call(fn, ...)``; they touch no database)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from services.keymgmt.hsm.session import Hsm
from services.keymgmt.vault.crypto import (
    decrypt_pan,
    encrypt_pan,
    open_sealed,
    pan_hash,
    seal_bytes,
)
from services.keymgmt.vault.schemas import VaultCardIn
from shared.pan import mask_pan


@dataclass(frozen=True)
class SealedCard:
    card_id: UUID
    pan_hash: bytes
    pan_blob: bytes
    record_blob: bytes
    masked_pan: str


@dataclass(frozen=True)
class OpenedCard:
    """A vault record opened inside keymgmt. Never logged, never returned whole."""

    pan: str
    psn: str
    expiry: str
    cardholder_name: str
    address: dict[str, Any]

    def __repr__(self) -> str:
        return f"OpenedCard(pan={mask_pan(self.pan)})"


def pan_context(card_id: UUID, issuer_id: str) -> bytes:
    return f"pan|{card_id}|{issuer_id}".encode()


def record_context(card_id: UUID, issuer_id: str) -> bytes:
    return f"record|{card_id}|{issuer_id}".encode()


def new_pan_token() -> str:
    """An opaque reference: random, so it says nothing about the PAN."""
    return f"pt_{uuid.uuid4().hex}"


def seal_cards(
    hsm: Hsm, vault_label: str, hmac_label: str, issuer_id: str, cards: Sequence[VaultCardIn]
) -> list[SealedCard]:
    """Seal each card's PAN and the rest of its record, and hash the PAN (HSM worker)."""
    out = []
    for card in cards:
        rest = card.model_dump(mode="json", exclude={"card_id", "pan"})
        out.append(
            SealedCard(
                card_id=card.card_id,
                pan_hash=pan_hash(hsm, hmac_label, card.pan),
                pan_blob=encrypt_pan(
                    hsm, vault_label, card.pan, pan_context(card.card_id, issuer_id)
                ),
                record_blob=seal_bytes(
                    hsm,
                    vault_label,
                    json.dumps(rest, sort_keys=True).encode(),
                    record_context(card.card_id, issuer_id),
                ),
                masked_pan=mask_pan(card.pan),
            )
        )
    return out


def pan_hashes(hsm: Hsm, hmac_label: str, pans: Sequence[str]) -> list[bytes]:
    return [pan_hash(hsm, hmac_label, pan) for pan in pans]


def open_card(hsm: Hsm, vaulted: Mapping[str, Any]) -> OpenedCard:
    """Open a vault row (HSM worker); a blob moved to another card or issuer fails."""
    card_id, issuer_id = vaulted["card_id"], vaulted["issuer_id"]
    pan = decrypt_pan(hsm, bytes(vaulted["pan_blob"]), pan_context(card_id, issuer_id))
    rest = json.loads(
        open_sealed(hsm, bytes(vaulted["record_blob"]), record_context(card_id, issuer_id))
    )
    return OpenedCard(
        pan=pan,
        psn=rest["psn"],
        expiry=rest["expiry"],
        cardholder_name=rest["cardholder_name"],
        address=rest["address"],
    )
