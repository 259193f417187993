"""Request models of the EMV endpoints (product profiles, QA read-back, ARQC checks), and their
refusals."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.keymgmt.emv.pin import PinBlockFormat, PinPolicy, PinVerification
from services.keymgmt.emv.profile import EmvProfile
from shared.errors import Conflict, Forbidden, Invalid, NotFound
from shared.keymgmt.contract import ArqcRequest, ReadbackRequest, Refusal

# The QA endpoints' requests are keymgmt's contract (shared/keymgmt/contract.py), as QA sends them.
__all__ = [
    "ArqcRequest",
    "CannotVerify",
    "CardInQaElsewhere",
    "CardNotInQa",
    "NoPin",
    "NoSuchProduct",
    "NotFulfillment",
    "ProductProfile",
    "ReadbackLimitReached",
    "ReadbackRequest",
    "UnusableIssuerId",
]


class ProductProfile(BaseModel):
    """The issuer's choices for an EMV product (keymgmt's card_products table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pin_length: int = Field(default=4, ge=4, le=12)
    pin_formats: list[PinBlockFormat] = Field(
        default_factory=list, description="empty: no PIN for this product"
    )
    pin_verification: PinVerification = PinVerification.NONE
    pvki: str = Field(default="1", pattern=r"^\d$")
    decimalisation: str = Field(default="0123456789012345", pattern=r"^\d{16}$")
    validation_offset: int | None = Field(default=None, ge=0, le=18)
    validation_length: int = Field(default=12, ge=1, le=16)
    cvv: bool = Field(default=False, description="CVV, iCVV and CVV2 from the CVK pair")
    emv: EmvProfile | None = Field(
        default=None, description="the EMV data elements (docs/emv-profile.md); None: defaults"
    )

    @model_validator(mode="after")
    def _offline_pin_needs_a_pin(self) -> ProductProfile:
        if self.emv is not None and not self.pin_formats:
            raise ValueError("pin_formats: an EMV profile needs a PIN (DGI 8010, offline PIN)")
        return self

    def pin_policy(self) -> PinPolicy | None:
        if not self.pin_formats:
            return None
        return PinPolicy(
            length=self.pin_length,
            formats=tuple(dict.fromkeys(self.pin_formats)),
            verification=self.pin_verification,
            pvki=self.pvki,
            decimalisation=self.decimalisation,
            validation_offset=self.validation_offset,
            validation_length=self.validation_length,
        )


class UnusableIssuerId(Invalid):
    pass


class NoSuchProduct(NotFound):
    pass


class NoPin(NotFound):
    pass


class NotFulfillment(Forbidden):
    pass


class CannotVerify(Conflict):
    pass


class CardNotInQa(Conflict):
    """QA read-back for a card not personalized on that chip, or cancelled (issue 16)."""

    refusal = Refusal.CARD_NOT_IN_QA


class CardInQaElsewhere(Conflict):
    refusal = Refusal.CARD_IN_QA_ELSEWHERE


class ReadbackLimitReached(Conflict):
    refusal = Refusal.READBACK_LIMIT_REACHED
