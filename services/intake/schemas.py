"""Request and response bodies of the issuer-facing API."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: list[str] = Field(min_length=1, max_length=4)
    postcode: str = Field(max_length=16)
    city: str = Field(max_length=64)
    country: str = Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2")


class CardRequest(BaseModel):
    """One cardholder record. Field values are checked by the domain rules, which name the line
    and the field but never echo the PAN back."""

    model_config = ConfigDict(extra="forbid")

    pan: str = Field(description="13-19 digits, Luhn-valid; handed to the vault at once")
    psn: str = Field(default="00", description="PAN sequence number, 2 digits")
    expiry: str = Field(description="YYMM, in the future")
    cardholder_name: str = Field(description="embossable characters, at most 26")
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
    cards: list[CardRequest] = Field(min_length=1)


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
