"""The fulfillment service's door to keymgmt: the mailing address of a card
(docs/services.md). The retrying reader and its errors are shared with the other vault readers
(shared/keymgmt_client.py)."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

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
    "PinMailerState",
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


class PinMailerState(BaseModel):
    """What fulfillment learns of a PIN mailer: an opaque id and the print job's state."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    mailer_id: UUID
    card_id: UUID
    status: Literal["queued", "submitting", "submitted", "printed", "spoiled"]


class KeymgmtClient(VaultReader):
    async def mailing(self, card_id: UUID) -> MailingData:
        return await self.card_record(card_id, "mailing", MailingData)

    async def pin_mailer(self, card_id: UUID, batch_id: UUID) -> PinMailerState | None:
        """Have keymgmt print the card's PIN mailer (idempotent). None: the card has no PIN.
        Transport errors and 5xx (the PIN printer away) raise KeymgmtUnavailable: retried."""
        body = {"card_id": str(card_id), "batch_id": str(batch_id)}
        try:
            response = await self._http.post("/v1/pin-mailers", json=body)
        except httpx.TransportError as exc:
            raise KeymgmtUnavailable(f"POST /v1/pin-mailers: {exc.__class__.__name__}") from exc
        if response.status_code == 404:
            return None
        if response.status_code >= 500 or response.status_code in (401, 403):
            raise KeymgmtUnavailable(f"POST /v1/pin-mailers answered {response.status_code}")
        if response.status_code != 200:
            raise KeymgmtBadResponse(
                f"POST /v1/pin-mailers answered {response.status_code}: {response.text[:200]}"
            )
        try:
            return PinMailerState.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise KeymgmtBadResponse("POST /v1/pin-mailers broke its contract") from exc
