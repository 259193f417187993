"""keymgmt's repository as the unit of work carries it (`uow.repo`): one attribute per feature
package's repository, all on the unit's one connection.

One object with an attribute per package (rather than one class holding every statement) keeps
each package's SQL in its own room, and lets an endpoint read as what it touches:
`uow.repo.vault.vault_card(...)`, `uow.repo.keys.key(...)`.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from services.keymgmt.emv.oda_repository import OdaRepository
from services.keymgmt.emv.readback import ReadbackRepository
from services.keymgmt.emv.repository import EmvRepository
from services.keymgmt.keys.repository import KeysRepository
from services.keymgmt.perso.repository import PersoRepository
from services.keymgmt.pin_mailer.repository import PinMailerRepository
from services.keymgmt.sim.repository import SimRepository
from services.keymgmt.vault.repository import VaultRepository
from services.keymgmt.vault.retention_repository import RetentionRepository


class KeymgmtRepository:
    """The runtime's repository factory: `KeymgmtRepository(conn)`."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.keys = KeysRepository(conn)
        self.vault = VaultRepository(conn)
        self.emv = EmvRepository(conn)
        self.readback = ReadbackRepository(conn)  # QA read-backs (emv/readback.py)
        self.oda = OdaRepository(conn)
        self.sim = SimRepository(conn)
        self.perso = PersoRepository(conn)
        self.pin_mailers = PinMailerRepository(conn)
        self.retention = RetentionRepository(conn)
