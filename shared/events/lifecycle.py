"""Every event of a card's life. Defined once; services import, never redefine.

Departures from ../shared/ARCHITECTURE.md, on purpose:
- `card.ordered` (one per card, keyed by card id) carries what order.accepted would otherwise
  have to carry for every card; a 100,000-card order would not fit one Kafka record.
- `batch.closed` marks the end of a batch's life: every card dispatched or destroyed, after the
  production reconciliation (`batch.reconciled`) released it for dispatch.
- `dead_letter.recorded` lets audit count events that no consumer could process.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, model_validator

from shared.events.base import Event

MaskedPan = str  # first 6 + last 4, the rest '*' (never the clear PAN)
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
# An encoding station's id, as its principal names it (`station:<name>`).
STATION_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
StationName = Annotated[str, Field(pattern=STATION_NAME_PATTERN)]
MAX_BATCH_STATIONS = 32


class OrderReceived(Event):
    type: Literal["order.received"] = "order.received"
    order_id: UUID
    product_id: str
    card_count: int = Field(ge=1)
    external_ref: str


class OrderAccepted(Event):
    type: Literal["order.accepted"] = "order.accepted"
    order_id: UUID
    batch_id: UUID
    product_id: str
    card_count: int = Field(ge=1)


class OrderRejected(Event):
    type: Literal["order.rejected"] = "order.rejected"
    order_id: UUID
    reason: str


class CardOrdered(Event):
    type: Literal["card.ordered"] = "card.ordered"
    card_id: UUID
    order_id: UUID
    batch_id: UUID
    product_id: str
    pan_token: str = Field(description="vault reference; the PAN itself stays in keymgmt")
    masked_pan: MaskedPan
    expiry: str = Field(pattern=r"^\d{4}$", description="YYMM")
    sequence: int = Field(ge=0, description="position of the card in its batch")


class StockReceived(Event):
    type: Literal["stock.received"] = "stock.received"
    lot_id: str
    product_id: str
    quantity: int = Field(ge=1)


class StockIssued(Event):
    type: Literal["stock.issued"] = "stock.issued"
    batch_id: UUID
    product_id: str
    quantity: int = Field(ge=1)


class StockReturned(Event):
    type: Literal["stock.returned"] = "stock.returned"
    batch_id: UUID
    product_id: str
    quantity: int = Field(ge=1)


class CardPrepared(Event):
    """keymgmt has made and recorded the card's secrets, in the HSM and its own tables: for a
    payment card the card master keys (MK-AC, MK-SMI, MK-SMC, kept by KCV) and, where the
    product asks, its PIN block and CVVs; for a SIM its Ki and OPc (sealed), ICCID and IMSI.
    The card is ready for an encoding station.

    What it does NOT promise (version 2 dropped v1's `dgis`, a constant list that looked like
    prepared data): the personalization script itself. keymgmt builds each card's DGIs and
    STORE DATA commands at perso time, inside the chip's own secure channel, because the
    sensitive DGIs are encrypted under that session's keys (docs/perso-protocol.md)."""

    type: Literal["card.prepared"] = "card.prepared"
    version: Literal[2] = 2
    card_id: UUID
    batch_id: UUID
    product_id: str
    masked_pan: MaskedPan
    application: Literal["emv", "usim"] = Field(description="what the station will write")
    key_scheme: str = Field(description="e.g. 'EMV-OPTION-A', 'MILENAGE'")


class BatchAssigned(Event):
    """keymgmt planned a batch onto encoding stations (docs/keymgmt.md, "Station planning"):
    only these stations get the script of a card of the batch that no station has bound yet,
    and electrical's station claims only cards of batches assigned to its own station id. An
    empty list parks the batch (no station). `revision` grows with each assignment of the
    batch, so a consumer keeps the newest whatever order records arrive in. Actor: `keymgmt`
    for the default (BUREAU_PERSO_STATIONS), `operator:<name>` for a planner."""

    type: Literal["batch.assigned"] = "batch.assigned"
    batch_id: UUID
    stations: list[StationName] = Field(max_length=MAX_BATCH_STATIONS)
    revision: int = Field(ge=1)


class CardEncoded(Event):
    type: Literal["card.encoded"] = "card.encoded"
    card_id: UUID
    batch_id: UUID
    chip_serial: str
    station_id: str
    reader: str
    apdu_count: int = Field(ge=0)


class CardSpoiled(Event):
    type: Literal["card.spoiled"] = "card.spoiled"
    card_id: UUID
    batch_id: UUID
    stage: Literal["electrical", "graphical"]
    reason: str
    chip_serial: str | None = None
    station_id: str | None = None
    apdu_trace: list[str] = Field(
        default_factory=list, description="APDU headers and status words only, never data"
    )


class CardPrinted(Event):
    type: Literal["card.printed"] = "card.printed"
    card_id: UUID
    batch_id: UUID
    chip_serial: str
    printer: str
    image_sha256: str


class CardQaPassed(Event):
    type: Literal["card.qa_passed"] = "card.qa_passed"
    card_id: UUID
    batch_id: UUID
    chip_serial: str
    checks: list[str]


class CardQaFailed(Event):
    type: Literal["card.qa_failed"] = "card.qa_failed"
    card_id: UUID
    batch_id: UUID
    chip_serial: str | None
    reason: str


class CardPacked(Event):
    type: Literal["card.packed"] = "card.packed"
    card_id: UUID
    batch_id: UUID
    carrier_id: str


class PinMailerPrinted(Event):
    type: Literal["pin_mailer.printed"] = "pin_mailer.printed"
    card_id: UUID
    batch_id: UUID
    mailer_id: str


class ShipmentDispatched(Event):
    type: Literal["shipment.dispatched"] = "shipment.dispatched"
    shipment_id: UUID
    batch_id: UUID
    kind: Literal["cards", "pin_mailers"]
    card_ids: list[UUID]
    courier: str
    manifest_sha256: str


class CardCancelled(Event):
    """The issuer cancelled a card before it was personalized (intake). Its blank goes back to
    stock (a stock.returned for the batch) and the card is accounted for without destruction."""

    type: Literal["card.cancelled"] = "card.cancelled"
    card_id: UUID
    batch_id: UUID
    order_id: UUID
    reason: str = Field(max_length=200)


class StockDestroyed(Event):
    """Blank cards destroyed from the vault's stock (damaged, obsolete), witnessed by two."""

    type: Literal["stock.destroyed"] = "stock.destroyed"
    product_id: str
    quantity: int = Field(ge=1)
    reason: str
    witnesses: tuple[str, str]


class CardDestroyed(Event):
    type: Literal["card.destroyed"] = "card.destroyed"
    card_id: UUID
    batch_id: UUID
    reason: str
    witnesses: tuple[str, str]


class CardDataPurged(Event):
    """keymgmt deleted a card's data under the retention rules (PCI Card Production): its
    sensitive authentication data (CVV, iCVV, PIN blocks) or its cardholder data (PAN, name,
    address). Names what was deleted and why, never a value."""

    type: Literal["card.data_purged"] = "card.data_purged"
    card_id: UUID
    purged: list[Literal["sensitive-authentication-data", "cardholder-data"]] = Field(
        min_length=1, max_length=2
    )
    reason: str = Field(max_length=200)


class IccKeyPoolRefilled(Event):
    """keymgmt generated ICC key pairs in the HSM and stored them in its pool, each private key
    wrapped under the pool key at once (EMV Book 2 DDA/CDA). Names each pair by its pool id and
    the SHA-256 of its public modulus, never a private part."""

    type: Literal["icc_key_pool.refilled"] = "icc_key_pool.refilled"
    pool_key_label: str = Field(min_length=1, max_length=128)
    bits: int = Field(ge=512, le=4096)
    count: int = Field(ge=1)
    pool_ids: list[int] = Field(min_length=1, max_length=100)
    fingerprints: list[Sha256Hex] = Field(
        min_length=1, max_length=100, description="SHA-256 of each pair's modulus, hex"
    )
    pool_size: int = Field(ge=0, description="free pairs in the pool after the refill")

    @model_validator(mode="after")
    def _one_fingerprint_per_pair(self) -> IccKeyPoolRefilled:
        if not self.count == len(self.pool_ids) == len(self.fingerprints):
            raise ValueError(
                f"count {self.count}, {len(self.pool_ids)} pool ids and"
                f" {len(self.fingerprints)} fingerprints must agree"
            )
        return self


class IccKeyPairDrawn(Event):
    """A card's preparation took an ICC key pair from the pool: which pair (pool id and the
    SHA-256 of its public modulus) went to which card."""

    type: Literal["icc_key_pair.drawn"] = "icc_key_pair.drawn"
    card_id: UUID
    pool_id: int = Field(ge=1)
    pool_key_label: str = Field(min_length=1, max_length=128)
    fingerprint: Sha256Hex = Field(description="SHA-256 of the pair's modulus, hex")


class BatchReconciled(Event):
    type: Literal["batch.reconciled"] = "batch.reconciled"
    batch_id: UUID
    counts: dict[str, int]


class BatchDiscrepancy(Event):
    type: Literal["batch.discrepancy"] = "batch.discrepancy"
    batch_id: UUID
    counts: dict[str, int]
    missing: dict[str, list[UUID]] = Field(description="stage -> card ids not accounted for")
    problems: list[str]


class BatchClosed(Event):
    type: Literal["batch.closed"] = "batch.closed"
    batch_id: UUID
    dispatched: int
    destroyed: int


class LogCheckpoint(Event):
    type: Literal["log.checkpoint"] = "log.checkpoint"
    tree_size: int
    root_hash: str
    signature: str


class DeadLetterRecorded(Event):
    type: Literal["dead_letter.recorded"] = "dead_letter.recorded"
    source_topic: str
    source_partition: int
    source_offset: int
    consumer: str
    reason: str
