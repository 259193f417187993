"""keymgmt's typed dependencies: what bootstrap() builds once (settings, the HSM gate the keeper
fills, the PIN printer, the preparation cache, the API's open ceremonies) and the callers each
endpoint admits. Endpoints take `deps: KeymgmtDepsDep`; handlers get the same object bound."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends

from services.keymgmt.emv.preparation import ConfigCache
from services.keymgmt.hsm.gate import HsmGate
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.open_ceremonies import OpenCeremonies
from services.keymgmt.pin_mailer.printing import PinPrinter
from services.keymgmt.settings import KeymgmtSettings
from shared.auth import Principal, require
from shared.errors import Forbidden
from shared.service import deps_of


@dataclass(frozen=True)
class KeymgmtDeps:
    settings: KeymgmtSettings
    gate: HsmGate = field(default_factory=HsmGate)
    pin_printer: PinPrinter = field(default_factory=PinPrinter)
    config_cache: ConfigCache = field(default_factory=ConfigCache)
    ceremonies: OpenCeremonies = field(default_factory=OpenCeremonies)
    actor: str = "keymgmt"

    def hsm(self) -> Hsm:
        """The open HSM session; HsmUnavailable (503, retried by the consumer) when none."""
        return self.gate.get()


KeymgmtDepsDep = Annotated[KeymgmtDeps, Depends(deps_of(KeymgmtDeps))]


class CallerNotAllowed(Forbidden):
    pass


class _ServiceCaller:
    """A service principal, and one of the named services."""

    def __init__(self, *names: str) -> None:
        self.names = names

    async def __call__(self, who: Annotated[Principal, Depends(require("service"))]) -> Principal:
        if who.name not in self.names:
            raise CallerNotAllowed(f"service {who.name!r} may not call this endpoint")
        return who


AnyService = Annotated[Principal, Depends(require("service"))]
Intake = Annotated[Principal, Depends(_ServiceCaller("intake"))]
Graphical = Annotated[Principal, Depends(_ServiceCaller("graphical"))]
Fulfillment = Annotated[Principal, Depends(_ServiceCaller("fulfillment"))]
Qa = Annotated[Principal, Depends(_ServiceCaller("qa"))]
Station = Annotated[Principal, Depends(require("station"))]
Custodian = Annotated[Principal, Depends(require("custodian"))]
Conductor = Annotated[Principal, Depends(require("custodian", "admin"))]
KeyReader = Annotated[Principal, Depends(require("custodian", "admin", "issuer"))]
Auditors = Annotated[Principal, Depends(require("custodian", "admin", "auditor"))]
SigningKeyReader = Annotated[
    Principal, Depends(require("auditor", "custodian", "admin", "service"))
]


def who_of(principal: Principal) -> str:
    """How a principal is named in keymgmt's records: `role:name`."""
    return f"{principal.role}:{principal.name}"
