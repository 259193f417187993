"""What intake's endpoints, handlers and workers are given (built once by app.bootstrap)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from services.intake.orders import PanVault
from services.intake.settings import IntakeSettings
from services.intake.webhooks import Deliverer
from shared.service import deps_of


@dataclass(frozen=True)
class IntakeDeps:
    settings: IntakeSettings
    vault: PanVault
    deliverer: Deliverer

    def callbacks_queued(self) -> None:
        """After a commit that queued webhook callbacks: send them now, not at next poll."""
        self.deliverer.wakeup.set()


IntakeDepsDep = Annotated[IntakeDeps, Depends(deps_of(IntakeDeps))]
