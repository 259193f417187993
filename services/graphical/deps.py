"""What graphical's endpoints and handlers are given (built once by app.bootstrap)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Protocol
from uuid import UUID

from fastapi import Depends

from services.graphical.printing import PrintSpooler
from services.graphical.render import FaceRenderer
from shared.keymgmt.contract import PrintData
from shared.service import deps_of


class PrintDataSource(Protocol):
    """keymgmt's vault (shared/keymgmt/client.py), tried a few times: KeymgmtUnavailable is a
    ConnectionError the consumer retries without limit; a 404 (KeymgmtRefused.not_found) means
    keymgmt holds no such card."""

    async def print_data(self, card_id: UUID) -> PrintData: ...


@dataclass(frozen=True)
class GraphicalDeps:
    keymgmt: PrintDataSource
    renderer: FaceRenderer
    spooler: PrintSpooler
    printer_name: str
    actor: str = "graphical"


GraphicalDepsDep = Annotated[GraphicalDeps, Depends(deps_of(GraphicalDeps))]
