"""Audit's repositories on one connection, the repository a unit of work carries: the batch and
card projections, the event log, the Merkle tree, and the reports (all SQL lives in them)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from services.audit.log_repository import EventLog
from services.audit.report_repository import ReportRepository
from services.audit.repository import AuditRepository
from services.audit.tree_repository import MerkleStore


class AuditStore:
    def __init__(self, conn: AsyncConnection, schema: str) -> None:
        self.batches = AuditRepository(conn, schema)
        self.log = EventLog(conn, schema)
        self.tree = MerkleStore(conn, schema)
        self.reports = ReportRepository(conn, schema)
