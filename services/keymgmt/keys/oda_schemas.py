"""Requests and refusals of the ODA key endpoints (keys/oda_api.py; docs/emv-profile.md)."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import Conflict, Forbidden, Invalid, NotFound

Hex = Field(pattern=r"^(?:[0-9A-Fa-f]{2})+$")


class CaPublicKeyIn(BaseModel):
    """A payment scheme's CA public key the bureau trusts (configuration, by RID + index)."""

    model_config = ConfigDict(extra="forbid")

    modulus: str = Field(pattern=r"^(?:[0-9A-Fa-f]{2}){64,248}$")
    exponent: str = Field(pattern=r"^(03|010001)$")
    expires: date


class TestCaIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expires: date


class IssuerCertificateIn(BaseModel):
    """An issuer public key certificate as the scheme CA returned it (Book 2 §5.3)."""

    model_config = ConfigDict(extra="forbid")

    rid: str = Field(pattern=r"^[0-9A-Fa-f]{10}$")
    ca_index: str = Field(pattern=r"^[0-9A-Fa-f]{2}$")
    certificate: str = Hex
    remainder: str = Field(default="", pattern=r"^(?:[0-9A-Fa-f]{2})*$")
    exponent: str = Field(pattern=r"^(03|010001)$")


class TestCertificateIn(BaseModel):
    """Ask the bureau's test CA to sign the issuer key (test and demo only)."""

    model_config = ConfigDict(extra="forbid")

    ca_index: str = Field(pattern=r"^[0-9A-Fa-f]{2}$")
    bin: str = Field(pattern=r"^\d{6,8}$", description="the issuer identifier (PAN prefix)")
    expires: date


class PoolRefillIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=2000)


class UnknownCa(Invalid):
    pass


class CertificateRefused(Invalid):
    pass


class NoCaKey(NotFound):
    pass


class NoIssuerKey(NotFound):
    pass


class IssuerKeyExists(Conflict):
    pass


class NotInProduction(Forbidden):
    pass
