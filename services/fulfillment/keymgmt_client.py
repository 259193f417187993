"""The fulfillment service's door to keymgmt: the mailing address of a card
(docs/services.md). The retrying reader and its errors are shared with the other vault readers
(shared/keymgmt_client.py)."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, ConfigDict

from shared.keymgmt_client import (
    CardNotInVault,
    KeymgmtBadResponse,
    KeymgmtError,
    KeymgmtUnavailable,
    VaultReader,
)

__all__ = [
    "CardNotInVault",
    "KeymgmtBadResponse",
    "KeymgmtClient",
    "KeymgmtError",
    "KeymgmtUnavailable",
    "MailingData",
]


class Address(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    lines: list[str]
    postcode: str
    city: str
    country: str


class MailingData(BaseModel):
    """Who the card goes to: kept only to print the carrier, purged at dispatch."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    card_id: UUID
    cardholder_name: str
    address: Address


class KeymgmtClient(VaultReader):
    async def mailing(self, card_id: UUID) -> MailingData:
        return await self.card_record(card_id, "mailing", MailingData)
