"""The station's perso request (docs/perso-protocol.md) and its refusals. Two refusals carry a
code the station must tell from the others (X-Bureau-Refusal): the chip is rejected, not kept
for another card."""

from __future__ import annotations

from typing import Final
from uuid import UUID

from pydantic import BaseModel, Field

from shared.errors import Conflict, Invalid, NotFound

CRYPTOGRAM_MISMATCH: Final = "card-cryptogram-mismatch"
CARD_CANCELLED: Final = "card-cancelled"  # the issuer cancelled the card: no script


class SecureScriptRequest(BaseModel):
    """POST /v1/perso/secure-scripts: what the station read from the card, nothing secret."""

    card_id: UUID
    chip_serial: str = Field(pattern=r"^[0-9A-Fa-f]{12}$", description="from the CPLC")
    host_challenge: str = Field(pattern=r"^[0-9A-Fa-f]{16}$", description="8 bytes hex")
    initialize_update_response: str = Field(
        pattern=r"^(?:[0-9A-Fa-f]{56}|[0-9A-Fa-f]{58})$",
        description="the card's answer without SW: 29 bytes (SCP03) or 28 (SCP02)",
    )


class UnusableAnswer(Invalid):
    """The INITIALIZE UPDATE answer or a script command cannot be used."""


class CardCancelledByIssuer(Conflict):
    refusal = CARD_CANCELLED


class CardCryptogramRefused(Conflict):
    """The card did not prove it holds this bureau's keys: spoil it, eject the chip."""

    refusal = CRYPTOGRAM_MISMATCH


class CardNotVaulted(NotFound):
    pass


class PersoRefused(Conflict):
    """Not prepared, bound to another chip, keys not active or changed since preparation."""
