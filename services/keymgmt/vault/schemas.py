"""Request models of the vault endpoints (the cardholder record as intake sends it), and their
refusals."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import Conflict, Invalid, NotFound


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lines: list[str] = Field(min_length=1, max_length=4)
    postcode: str = Field(max_length=16)
    city: str = Field(max_length=64)
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")


class VaultCardIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    card_id: UUID
    pan: str = Field(pattern=r"^\d{13,19}$", repr=False)
    psn: str = Field(default="00", pattern=r"^\d{2}$")
    expiry: str = Field(pattern=r"^\d{2}(0[1-9]|1[0-2])$", description="YYMM")
    cardholder_name: str = Field(min_length=2, max_length=26)
    address: Address


class VaultStore(BaseModel):
    model_config = ConfigDict(extra="forbid")
    issuer_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    cards: list[VaultCardIn] = Field(min_length=1)


class DuplicateCard(Invalid):
    pass


class VaultedWithOtherData(Conflict):
    pass


class NotInVault(NotFound):
    pass
