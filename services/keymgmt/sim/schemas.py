"""Request models of the SIM endpoints (products, batches, QA), and their refusals."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from services.keymgmt.sim.profile import SimProfile
from shared.errors import Conflict, Invalid, NotFound
from shared.keymgmt.contract import SimChallengeRequest, SimCheckRequest

# The SIM QA endpoints' requests are keymgmt's contract (shared/keymgmt/contract.py).
__all__ = [
    "ISSUER",
    "MAX_BATCH",
    "NoSuchBatch",
    "NoSuchSimProduct",
    "NotASim",
    "SimBatchIn",
    "SimChallengeRequest",
    "SimCheckRequest",
    "SimProductIn",
    "SimProductInvalid",
    "SimRefused",
    "TransportKeyExchange",
]

MAX_BATCH = 10_000
ISSUER = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class SimProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    op: str = Field(pattern=r"^[0-9A-Fa-f]{32}$", repr=False, description="OP, write-only")
    transport_key_label: str = Field(description="the operator's transport key (usage wrap)")
    iccid_prefix: str = Field(pattern=r"^89\d{2,14}$")
    iccid_length: int = Field(default=19, ge=18, le=20)
    imsi_prefix: str = Field(pattern=r"^\d{5,6}$", description="MCC || MNC")
    first_serial: int = Field(ge=0)
    last_serial: int = Field(ge=0)
    profile: SimProfile = Field(
        default_factory=SimProfile, description="the operator's SIM profile (docs/sim.md)"
    )


class SimBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    issuer_id: str = Field(pattern=ISSUER)
    product_id: str = Field(min_length=1, max_length=64)
    count: int = Field(ge=1, le=MAX_BATCH)


class TransportKeyExchange(BaseModel):
    """POST /v1/sim/transport-keys/{operator}: the operator's RSA public key (PEM)."""

    model_config = ConfigDict(extra="forbid")

    public_key_pem: str = Field(min_length=1, max_length=16_000)
    version: int = Field(default=1, ge=1, le=999)


class SimProductInvalid(Invalid):
    pass


class SimRefused(Conflict):
    """A transport key, a range or a product that cannot be used as asked."""


class NoSuchSimProduct(NotFound):
    pass


class NoSuchBatch(NotFound):
    pass


class NotASim(NotFound):
    pass
