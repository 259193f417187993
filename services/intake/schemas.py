"""Request and response bodies of the issuer-facing API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from shared.errors import DomainError

# The most cards one order (JSON or file) may name: the bound of every card list.
MAX_CARDS_PER_ORDER = 100_000


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The rules of each field are shared/cardholder.py's (the vault's too), checked by
    # service.validate_card, which names the card and the field.
    lines: list[Annotated[str, Field(max_length=64)]] = Field(min_length=1, max_length=4)
    postcode: str = Field(max_length=16)
    city: str = Field(max_length=64)
    country: str = Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2, capitals")


class CardRequest(BaseModel):
    """One cardholder record. Field values are checked by the domain rules, which name the line
    and the field but never echo the PAN back."""

    model_config = ConfigDict(extra="forbid")

    # Lengths here only bound what is parsed; the rules are shared/cardholder.py's.
    pan: str = Field(
        max_length=64, description="13-19 digits, Luhn-valid; handed to the vault at once"
    )
    psn: str = Field(default="00", max_length=8, description="PAN sequence number, 2 digits")
    expiry: str = Field(max_length=8, description="YYMM, in the future")
    cardholder_name: str = Field(max_length=256, description="2 to 26 embossable characters")
    address: Address


class OrderRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "external_ref": "ACME-2026-11-0001",
                    "product_id": "acme-visa-classic",
                    "cards": [
                        {
                            "pan": "4111111111111111",
                            "psn": "00",
                            "expiry": "2911",
                            "cardholder_name": "ADA LOVELACE",
                            "address": {
                                "lines": ["12 St James's Square"],
                                "postcode": "SW1Y 4JH",
                                "city": "London",
                                "country": "GB",
                            },
                        }
                    ],
                }
            ]
        },
    )

    external_ref: str = Field(min_length=1, max_length=64)
    product_id: str = Field(min_length=1, max_length=64)
    cards: list[CardRequest] = Field(min_length=1, max_length=MAX_CARDS_PER_ORDER)


class CardSummary(BaseModel):
    card_id: UUID
    sequence: int
    masked_pan: str
    expiry: str


class OrderResponse(BaseModel):
    order_id: UUID
    batch_id: UUID
    external_ref: str
    product_id: str
    status: str
    card_count: int
    cards: list[CardSummary]


class OrderSummary(BaseModel):
    """An order without its card list (a bulk order holds up to 100,000 cards: page through
    them with GET /v1/orders/{order_id}/cards)."""

    order_id: UUID
    batch_id: UUID
    external_ref: str
    product_id: str
    status: str
    card_count: int
    priority: int = 0
    created_at: datetime | None = None
    cards_by_status: dict[str, int] = Field(
        default_factory=dict, description="how many of the order's cards are in each status"
    )


class CardStatus(BaseModel):
    card_id: UUID
    order_id: UUID
    sequence: int
    masked_pan: str
    expiry: str
    status: str = Field(
        description="ordered, prepared, encoded, printed, qa_passed, packed, dispatched; or an"
        " exception: spoiled, qa_failed, cancelled, destroyed"
    )
    status_at: datetime | None = None


class CardPage(BaseModel):
    cards: list[CardStatus]
    next_after: int | None = Field(description="pass as ?after= for the next page; null at the end")


class OrderEvent(BaseModel):
    event_id: UUID
    type: str
    card_id: UUID | None
    occurred_at: datetime
    detail: dict[str, Any]


class EventPage(BaseModel):
    events: list[OrderEvent]
    next_after: int | None


class Cancellation(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"card_ids": None, "reason": "customer closed account"}]},
    )
    card_ids: list[UUID] | None = Field(
        default=None,
        max_length=100_000,
        description="the cards to cancel; omit to cancel every card not yet personalized",
    )
    reason: str = Field(min_length=1, max_length=200)


class CancellationResult(BaseModel):
    order_id: UUID
    cancelled: list[UUID]


class WebhookConfig(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"url": "https://issuer.example/bureau-events"}]},
    )
    url: AnyHttpUrl
    secret: str | None = Field(
        default=None,
        min_length=32,
        max_length=128,
        description="the signing secret; omit and the bureau makes one and shows it once",
    )


class WebhookView(BaseModel):
    url: str
    updated_at: datetime
    secret: str | None = Field(default=None, description="only in the answer that set it")


class WebhookDelivery(BaseModel):
    delivery_id: UUID
    type: str
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    failed_at: datetime | None
    last_error: str | None


class StockReturn(BaseModel):
    """Blank cards brought back to the vault from a batch (unused)."""

    model_config = ConfigDict(extra="forbid")
    issuer_id: str
    product_id: str
    batch_id: UUID
    quantity: int = Field(ge=1, le=10_000_000)


class StockDestruction(BaseModel):
    """Blank cards to destroy from the vault's stock: requested by the operator whose token
    sends it, confirmed by a second operator with their own token (dual control). No typed
    witness names: the two principals are the witnesses."""

    model_config = ConfigDict(extra="forbid")
    issuer_id: str
    product_id: str
    quantity: int = Field(ge=1, le=10_000_000)
    reason: str = Field(min_length=1, max_length=200)


class StockLevel(BaseModel):
    issuer_id: str
    product_id: str
    received: int = 0
    issued: int = 0
    returned: int = 0
    destroyed: int = 0
    on_hand: int


class PlannedBatch(BaseModel):
    issuer_id: str
    product_id: str
    priority: int
    card_count: int
    orders: list[UUID]


class LineError(BaseModel):
    line: int = Field(description="1-based position of the card in the order")
    field: str
    problem: str


class IssuerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    issuer_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    name: str = Field(min_length=1, max_length=128)


class ProductCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    product_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    name: str = Field(min_length=1, max_length=128)
    kind: str = Field(pattern=r"^(emv|sim)$")


class StockReceipt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    issuer_id: str
    product_id: str
    lot_id: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=10_000_000)


class FileTooLarge(DomainError):
    """A bulk file larger than the bureau accepts."""

    status_code = 413


class UnsupportedMedia(DomainError):
    """A bulk file neither CSV nor NDJSON."""

    status_code = 415
