"""SQL of the Merkle tree and the checkpoints (the tree's arithmetic is in merkle.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.audit.merkle import NodeId, Range, extend, nodes_of, perfect_subtrees, range_hash
from services.audit.repository import json_value
from shared.db import checked_identifier


class TreeGapError(LookupError):
    """A node or leaf the tree needs is not stored: the log lost an entry."""


@dataclass(frozen=True)
class StoredCheckpoint:
    tree_size: int
    root_hash: str
    signed_at: datetime
    origin: str
    note: str
    key_id: str
    algorithm: str
    signature: str

    def view(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "timestamp": self.signed_at.isoformat(),
            "origin": self.origin,
            "note": self.note,
            "key_id": self.key_id,
            "algorithm": self.algorithm,
            "signature": self.signature,
        }


_CHECKPOINT_COLUMNS = "tree_size, root_hash, signed_at, origin, note, key_id, algorithm, signature"


class MerkleStore:
    def __init__(self, conn: AsyncConnection, schema: str) -> None:
        self._conn = conn
        self._s = checked_identifier(schema)

    async def tree_size(self, *, lock: bool = False) -> int:
        lock_clause = " FOR UPDATE" if lock else ""
        sql = f"SELECT size FROM {self._s}.tree_head{lock_clause}"
        return int((await self._conn.execute(text(sql))).scalar_one())

    async def log_size(self) -> int:
        sql = f"SELECT coalesce(max(log_index) + 1, 0) FROM {self._s}.events"
        return int((await self._conn.execute(text(sql))).scalar_one())

    async def leaves(self, start: int, limit: int) -> list[bytes]:
        """Leaf hashes from `start` on, as far as the log indexes are contiguous."""
        rows = await self._conn.execute(
            text(
                f"SELECT log_index, leaf_hash FROM {self._s}.events WHERE log_index >= :a"
                " ORDER BY log_index LIMIT :n"
            ),
            {"a": start, "n": limit},
        )
        found: list[bytes] = []
        for index, leaf in rows:
            if index != start + len(found):
                break
            found.append(bytes.fromhex(leaf))
        return found

    async def node_hashes(self, nodes: Iterable[NodeId]) -> dict[NodeId, bytes]:
        wanted = set(nodes)
        leaves = [index for level, index in wanted if level == 0]
        inner = [(level, index) for level, index in wanted if level > 0]
        found: dict[NodeId, bytes] = {}
        if leaves:
            rows = await self._conn.execute(
                text(
                    f"SELECT log_index, leaf_hash FROM {self._s}.events"
                    " WHERE log_index = ANY(CAST(:ix AS bigint[]))"
                ),
                {"ix": leaves},
            )
            found |= {(0, int(i)): bytes.fromhex(h) for i, h in rows}
        if inner:
            rows = await self._conn.execute(
                text(
                    f"SELECT n.level, n.idx, n.hash FROM {self._s}.tree_nodes n JOIN unnest("
                    "CAST(:lv AS smallint[]), CAST(:ix AS bigint[])) AS w(level, idx)"
                    " ON n.level = w.level AND n.idx = w.idx"
                ),
                {"lv": [lv for lv, _ in inner], "ix": [ix for _, ix in inner]},
            )
            found |= {(int(lv), int(ix)): bytes(h) for lv, ix, h in rows}
        missing = wanted - found.keys()
        if missing:
            raise TreeGapError(f"tree nodes missing: {sorted(missing)[:5]}")
        return found

    async def range_hashes(self, ranges: Sequence[Range]) -> list[bytes]:
        stored = await self.node_hashes(nodes_of(ranges))
        return [range_hash(a, b, stored) for a, b in ranges]

    async def root(self, size: int) -> bytes:
        (root,) = await self.range_hashes([(0, size)])
        return root

    async def add_nodes(self, nodes: Sequence[tuple[int, int, bytes]], new_size: int) -> None:
        if nodes:
            await self._conn.execute(
                text(
                    f"INSERT INTO {self._s}.tree_nodes (level, idx, hash) SELECT * FROM unnest("
                    "CAST(:lv AS smallint[]), CAST(:ix AS bigint[]), CAST(:h AS bytea[]))"
                ),
                {
                    "lv": [n[0] for n in nodes],
                    "ix": [n[1] for n in nodes],
                    "h": [n[2] for n in nodes],
                },
            )
        await self._conn.execute(text(f"UPDATE {self._s}.tree_head SET size = :n"), {"n": new_size})

    # --- checkpoints -------------------------------------------------------------------------
    async def add_checkpoint(self, checkpoint: StoredCheckpoint, event_id: Any) -> None:
        await self._conn.execute(
            text(
                f"INSERT INTO {self._s}.checkpoints ({_CHECKPOINT_COLUMNS}, event_id) VALUES"
                " (:tree_size, :root_hash, :signed_at, :origin, :note, :key_id, :algorithm,"
                " :signature, :event_id)"
            ),
            {**checkpoint.__dict__, "event_id": event_id},
        )

    async def checkpoints(
        self, *, before: int | None = None, limit: int = 1
    ) -> list[StoredCheckpoint]:
        """Newest first; `before` a tree size to page back from."""
        rows = await self._conn.execute(
            text(
                f"SELECT {_CHECKPOINT_COLUMNS} FROM {self._s}.checkpoints"
                " WHERE tree_size < coalesce(CAST(:b AS bigint), 9223372036854775807)"
                " ORDER BY tree_size DESC LIMIT :n"
            ),
            {"b": before, "n": limit},
        )
        return [StoredCheckpoint(*row) for row in rows]

    async def checkpoint(self, tree_size: int) -> StoredCheckpoint | None:
        row = (
            await self._conn.execute(
                text(
                    f"SELECT {_CHECKPOINT_COLUMNS} FROM {self._s}.checkpoints WHERE tree_size = :n"
                ),
                {"n": tree_size},
            )
        ).first()
        return None if row is None else StoredCheckpoint(*row)

    async def news_since(self, tree_size: int) -> bool:
        """Entries other than checkpoints themselves were logged at or after `tree_size`."""
        sql = (
            f"SELECT EXISTS (SELECT 1 FROM {self._s}.events WHERE log_index >= :n"
            " AND type <> 'log.checkpoint')"
        )
        return bool((await self._conn.execute(text(sql), {"n": tree_size})).scalar_one())

    # --- entries, for auditors -------------------------------------------------------------
    async def entries(self, start: int, end: int) -> list[dict[str, Any]]:
        rows = await self._conn.execute(
            text(
                f"SELECT log_index, event_id, type, payload FROM {self._s}.events"
                " WHERE log_index >= :a AND log_index < :b ORDER BY log_index"
            ),
            {"a": start, "b": end},
        )
        return [
            {"log_index": r[0], "event_id": str(r[1]), "type": r[2], "payload": json_value(r[3])}
            for r in rows
        ]

    async def log_index_of(self, event_id: Any) -> tuple[int, str] | None:
        row = (
            await self._conn.execute(
                text(f"SELECT log_index, issuer_id FROM {self._s}.events WHERE event_id = :e"),
                {"e": event_id},
            )
        ).first()
        return None if row is None else (int(row[0]), str(row[1]))


async def build_tree(engine: AsyncEngine, schema: str, chunk: int = 20_000) -> int:
    """Extend the tree over the log entries it does not cover yet. Returns the new size.

    One transaction per chunk, under the tree_head lock (one writer however many replicas). It
    stops at a gap in the log indexes: an entry removed behind the service's back is never
    papered over, and the verifier reports it."""
    while True:
        async with engine.begin() as conn:
            store = MerkleStore(conn, schema)
            size = await store.tree_size(lock=True)
            leaves = await store.leaves(size, chunk)
            if not leaves:
                if await store.log_size() > size:
                    raise TreeGapError(f"log entry {size} is missing: the tree stops before it")
                return size
            compact = await store.node_hashes(perfect_subtrees(0, size))
            frontier = [compact[node] for node in perfect_subtrees(0, size)]
            _, new_size, nodes = extend(frontier, size, leaves)
            await store.add_nodes(nodes, new_size)
        if len(leaves) < chunk:
            return new_size
