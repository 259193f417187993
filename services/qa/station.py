"""A QA station: several QA positions (one reader each) in one process, sharing the queue.

Each position (checker.QaMachine) claims the oldest queued card with FOR UPDATE SKIP LOCKED
(repository.claim_next), so the positions of a station, and the stations of a floor, share the
work by claims: no card is checked by two positions, and a position never waits on another.

Why positions in one process rather than one process per reader: a position's time per card
is mostly waiting (the feeder moving the card, pcscd's presence poll of the vpcd reader,
keymgmt's answer), which one event loop overlaps across readers; the CPU part (the EMV terminal
kernel, ODA's RSA) is small next to it. One process per reader would pay a Python process, a
Kafka consumer and a database pool per reader on a 2-core machine. A second station (another
process, its own BUREAU_QA_STATION name) still scales out past one machine: its claims are
named after it, and its restart puts back only its own cards (repository.release_all_checking).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from services.qa.checker import QaMachine
from shared.service import ServiceRuntime


class QaStation:
    def __init__(self, positions: Sequence[QaMachine]) -> None:
        if not positions:
            raise ValueError("a QA station needs at least one position (reader)")
        names = {p.station for p in positions}
        if len(names) != 1:
            raise ValueError(f"the positions of one QA station share its name, not {names}")
        readers = [p.reader for p in positions]
        if len(set(readers)) != len(readers):
            raise ValueError(f"a reader serves one QA position only: {readers}")
        self.positions = list(positions)
        self.name = positions[0].station

    @property
    def spool_dir(self) -> Path:
        """The card printer's spool, which every position reads (one printer per floor)."""
        return self.positions[0].spool_dir

    @property
    def readers(self) -> list[str]:
        return [p.reader for p in self.positions]

    def notify_queued(self) -> None:
        for position in self.positions:
            position.notify_queued()

    async def run(self, runtime: ServiceRuntime) -> None:
        """Put back what this station held when it stopped, once, then serve every position."""
        async with runtime.unit_of_work() as uow:
            await uow.repo.release_all_checking(self.name)
        await self.positions[0].sweep_spool(runtime)  # one spool, the card printer's
        async with asyncio.TaskGroup() as group:
            for position in self.positions:
                group.create_task(position.serve(runtime), name=f"qa {position.reader}")

    def status(self) -> dict[str, Any]:
        """Totals of the station, and each position's own state."""
        each = [asdict(p.status) | {"reader": p.reader} for p in self.positions]
        totals = {k: sum(e[k] for e in each) for k in ("passed", "failed", "machine_faults")}
        problems = [e["last_problem"] for e in each if e["last_problem"]]
        busy = [e["activity"] for e in each if e["activity"].startswith("checking")]
        activity = f"{len(busy)} of {len(each)} positions checking" if len(each) > 1 else None
        return {
            "activity": activity or each[0]["activity"],
            **totals,
            "last_problem": problems[-1] if problems else None,
            "positions": each,
        }
