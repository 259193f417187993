"""What graphical's endpoints and handlers are given (built once by app.bootstrap)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Protocol
from uuid import UUID

from fastapi import Depends

from services.graphical.keymgmt_client import PrintData
from services.graphical.printing import PrintSpooler
from services.graphical.render import FaceRenderer
from shared.service import deps_of


class PrintDataSource(Protocol):
    async def print_data(self, card_id: UUID) -> PrintData: ...


@dataclass(frozen=True)
class GraphicalDeps:
    keymgmt: PrintDataSource
    renderer: FaceRenderer
    spooler: PrintSpooler
    printer_name: str
    actor: str = "graphical"


GraphicalDepsDep = Annotated[GraphicalDeps, Depends(deps_of(GraphicalDeps))]
