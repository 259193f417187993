"""What audit's endpoints, handlers and workers are given (built once by app.bootstrap)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from services.audit.settings import AuditSettings
from services.audit.signer import KeymgmtSigner
from services.audit.witness_client import WitnessClient
from shared.service import deps_of


@dataclass(frozen=True)
class AuditDeps:
    settings: AuditSettings
    signer: KeymgmtSigner
    witness: WitnessClient | None = None


AuditDepsDep = Annotated[AuditDeps, Depends(deps_of(AuditDeps))]
