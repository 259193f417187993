"""Request models of the key endpoints (inventory, ceremonies, bureau keys, checkpoint
signing), and their refusals."""

from __future__ import annotations

import base64

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.keymgmt.hsm.kcv import KcvMethod
from services.keymgmt.hsm.session import BureauKeyKind
from services.keymgmt.keys.ceremony import CeremonyKeyType, KeyUsage
from shared.dual_control import SAME_PRINCIPAL_TWICE, WRONG_ROLE
from shared.errors import Conflict, Forbidden, NotFound
from shared.keymgmt.contract import CheckpointToSign

# Checkpoint signing's request is keymgmt's contract (shared/keymgmt/contract.py), as audit
# sends it.
__all__ = [
    "CeremonyNotOpen",
    "CeremonyOpen",
    "CeremonyStopped",
    "CheckpointToSign",
    "ClearComponentRefused",
    "ComponentIn",
    "CustodianTwiceRefused",
    "GenerateKey",
    "KeyExists",
    "KeyInUse",
    "KeyNotActive",
    "NoSuchKey",
    "NotAuditService",
    "NotYourComponent",
    "SigningKeyUnusable",
]


class CeremonyOpen(BaseModel):
    model_config = ConfigDict(extra="forbid")

    issuer_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    usage_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", examples=["IMK-AC"])
    version: int = Field(default=1, ge=1)
    key_type: CeremonyKeyType
    usage: KeyUsage
    components: int = Field(ge=2, le=3)
    expected_kcv: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{6}$")
    custodians: list[str] = Field(
        default_factory=list,
        max_length=3,
        description="principal names of the custodians, one per component in order (each"
        " component is then that custodian's step only); empty: any custodian, each once",
    )

    @model_validator(mode="after")
    def _named_custodians(self) -> CeremonyOpen:
        names = [name.strip().casefold() for name in self.custodians]
        if names and (len(names) != self.components or len(set(names)) != len(names)):
            raise ValueError("custodians: name one different custodian per component, or none")
        if not all(names):
            raise ValueError("custodians: a custodian name is empty")
        return self


class ComponentIn(BaseModel):
    """One component: ``wrapped`` (RSA-OAEP under the key-exchange key, base64), or, in
    dev/test only, ``component`` in clear hex (production refuses the ceremony)."""

    model_config = ConfigDict(extra="forbid")

    wrapped: str | None = Field(
        default=None,
        repr=False,
        max_length=2048,
        pattern=r"^[A-Za-z0-9+/]+={0,2}$",
        description="base64 RSAES-OAEP(SHA-1, MGF1-SHA-1) of the component under the KEK",
    )
    component: str | None = Field(
        default=None, repr=False, description="clear hex, dev/test only; never logged or stored"
    )
    kcv: str = Field(pattern=r"^[0-9A-Fa-f ]{6,8}$", description="from the component form")
    kcv_method: KcvMethod | None = Field(default=None, description="AES only; default CMAC")

    @model_validator(mode="after")
    def _one_form(self) -> ComponentIn:
        if (self.wrapped is None) == (self.component is None):
            raise ValueError("send exactly one of wrapped (base64) or component (clear hex)")
        if self.wrapped is not None:
            try:
                base64.b64decode(self.wrapped, validate=True)
            except ValueError as exc:
                raise ValueError("wrapped is not base64") from exc
        return self

    def wrapped_bytes(self) -> bytes:
        return base64.b64decode(self.wrapped or "", validate=True)


class GenerateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: str = Field(default="bureau", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    kind: BureauKeyKind
    version: int = Field(default=1, ge=1)


class NoSuchKey(NotFound):
    pass


class KeyInUse(Conflict):
    pass


class KeyNotActive(Conflict):
    pass


class KeyExists(Conflict):
    pass


class CeremonyNotOpen(NotFound):
    pass


class ClearComponentRefused(Forbidden):
    """Production: a component in clear is refused before anything else looks at it."""


class CeremonyStopped(Conflict):
    """Refused, expired or aborted: no key, and on record."""


class CustodianTwiceRefused(CeremonyStopped):
    """Dual control: one custodian principal entered a second component; the ceremony is
    refused (no key, on record)."""

    refusal = SAME_PRINCIPAL_TWICE


class NotACustodian(Forbidden):
    """A component submitted with a token of another role (an admin, an operator): refused and
    recorded as an attempt; the ceremony stays open for its custodians."""

    refusal = WRONG_ROLE


class NotYourComponent(Forbidden):
    """The ceremony named another custodian for the next component: this submission is refused
    and recorded; the ceremony waits for the named custodian."""

    refusal = "not-your-component"


class SigningKeyUnusable(Conflict):
    pass


class NotAuditService(Forbidden):
    pass
