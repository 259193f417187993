"""What fulfillment's handlers and API work with: keymgmt (the mailing data and the PIN
printer), the manifest writer, the inserter, the courier and the shipment size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from services.fulfillment.inserter import Inserter
from services.fulfillment.manifests import ManifestWriter
from shared.keymgmt.contract import MailingData, PinMailerRequest, PinMailerState


class MailingSource(Protocol):
    """keymgmt's vault and PIN printer (shared/keymgmt/client.py), tried a few times:
    KeymgmtUnavailable is a ConnectionError the consumer retries without limit; a 404 on the
    mailing address (KeymgmtRefused.not_found) means keymgmt holds no such card."""

    async def mailing(self, card_id: UUID) -> MailingData: ...

    async def pin_mailer(self, request: PinMailerRequest) -> PinMailerState | None:
        """The card's PIN mailer printed (idempotent); None: the card has no PIN."""
        ...


@dataclass(frozen=True)
class FulfillmentDeps:
    keymgmt: MailingSource
    manifests: ManifestWriter
    inserter: Inserter
    courier: str
    shipment_max_cards: int  # settings.fulfillment_shipment_max_cards
    actor: str = "fulfillment"
