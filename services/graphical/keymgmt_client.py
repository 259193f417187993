"""The graphical service's door to keymgmt: print data for a card (docs/services.md). The retrying
reader and its errors are shared with the other vault readers (shared/keymgmt_client.py)."""

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
    "PrintData",
]


class PrintData(BaseModel):
    """What a card face needs: never the clear PAN, only its masked form."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    card_id: UUID
    issuer_id: str
    cardholder_name: str
    masked_pan: str
    expiry: str  # YYMM


class KeymgmtClient(VaultReader):
    async def print_data(self, card_id: UUID) -> PrintData:
        return await self.card_record(card_id, "print-data", PrintData)
