"""keymgmt's SQL for the key inventory and key ceremonies (the engine's search_path is the
service's schema)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import text

from services.keymgmt.sql import SqlRepository

_KEY_COLUMNS = (
    "label, issuer_id, key_type, usage, kcv, kcv_method, other_kcvs, state, origin,"
    " custodians, ceremony_id, created_at, retired_at, retired_by"
)


def key_row(
    label: str,
    issuer_id: str,
    key_type: str,
    usage: str,
    kcvs: Sequence[tuple[str, str]],
    origin: str,
    custodians: Sequence[str] = (),
    ceremony_id: UUID | None = None,
) -> dict[str, Any]:
    """An inventory row; ``kcvs`` is (value, method) pairs, the first one is the main KCV."""
    (kcv, method), *others = kcvs
    return {
        "label": label,
        "issuer_id": issuer_id,
        "key_type": key_type,
        "usage": usage,
        "kcv": kcv,
        "kcv_method": method,
        "other_kcvs": [{"kcv": v, "method": m} for v, m in others],
        "origin": origin,
        "custodians": list(custodians),
        "ceremony_id": ceremony_id,
    }


class KeysRepository(SqlRepository):
    async def lock(self, name: str) -> None:
        """A transaction-scoped advisory lock (e.g. replicas generating bureau keys at once)."""
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:7], "big")
        await self.conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    # -- key inventory -----------------------------------------------------------------------
    async def key(self, label: str) -> dict[str, Any] | None:
        return await self._one(f"SELECT {_KEY_COLUMNS} FROM keys WHERE label = :l", l=label)

    async def keys(self, issuer_id: str | None) -> list[dict[str, Any]]:
        where = "" if issuer_id is None else " WHERE issuer_id = :i"
        return await self._all(
            f"SELECT {_KEY_COLUMNS} FROM keys{where} ORDER BY issuer_id, label", i=issuer_id
        )

    async def add_key(self, key: dict[str, Any]) -> bool:
        result = await self.conn.execute(
            text(
                "INSERT INTO keys (label, issuer_id, key_type, usage, kcv, kcv_method,"
                " other_kcvs, origin, custodians, ceremony_id) VALUES (:label, :issuer_id,"
                " :key_type, :usage, :kcv, :kcv_method, CAST(:other_kcvs AS jsonb), :origin,"
                " :custodians, :ceremony_id) ON CONFLICT (label) DO NOTHING RETURNING label"
            ),
            {**key, "other_kcvs": json.dumps(key.get("other_kcvs", []))},
        )
        return result.first() is not None

    async def retire_key(self, label: str, who: str) -> bool:
        result = await self.conn.execute(
            text(
                "UPDATE keys SET state = 'retired', retired_at = now(), retired_by = :w"
                " WHERE label = :l AND state = 'active' RETURNING label"
            ),
            {"l": label, "w": who},
        )
        return result.first() is not None

    async def active_labels(self, labels: Sequence[str]) -> set[str]:
        rows = await self.conn.execute(
            text("SELECT label FROM keys WHERE label = ANY(:ls) AND state = 'active'"),
            {"ls": list(labels)},
        )
        return {str(r[0]) for r in rows}

    # -- ceremonies --------------------------------------------------------------------------
    async def start_ceremony(self, ceremony: dict[str, Any]) -> None:
        await self.conn.execute(
            text(
                "INSERT INTO ceremonies (ceremony_id, label, issuer_id, key_type, usage,"
                " components, conducted_by) VALUES (:ceremony_id, :label, :issuer_id,"
                " :key_type, :usage, :components, :conducted_by)"
            ),
            ceremony,
        )

    async def add_step(
        self, ceremony_id: UUID, step: str, custodian: str | None, outcome: str, detail: str
    ) -> None:
        await self.conn.execute(
            text(
                "INSERT INTO ceremony_steps (ceremony_id, step, custodian, outcome, detail)"
                " VALUES (:c, :s, :who, :o, :d)"
            ),
            {"c": ceremony_id, "s": step, "who": custodian, "o": outcome, "d": detail},
        )

    async def finish_ceremony(self, ceremony_id: UUID, outcome: str, reason: str | None) -> None:
        await self.conn.execute(
            text(
                "UPDATE ceremonies SET outcome = :o, reason = :r, finished_at = now()"
                " WHERE ceremony_id = :c AND outcome = 'open'"
            ),
            {"c": ceremony_id, "o": outcome, "r": reason},
        )

    async def ceremonies(self, label: str | None) -> list[dict[str, Any]]:
        where = "" if label is None else " WHERE c.label = :l"
        return await self._all(
            "SELECT c.*, COALESCE((SELECT json_agg(json_build_object('step', s.step,"
            " 'custodian', s.custodian, 'outcome', s.outcome, 'detail', s.detail, 'at', s.at)"
            " ORDER BY s.id) FROM ceremony_steps s WHERE s.ceremony_id = c.ceremony_id),"
            f" '[]') AS steps FROM ceremonies c{where} ORDER BY c.started_at",
            l=label,
        )
