"""What the station agent needs from the world around it, and what it tells about a reader."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from services.electrical.keymgmt_client import PersoScript


class ScriptSource(Protocol):
    async def secure_script(
        self, card_id: UUID, chip_serial: str, host_challenge: bytes, iu_answer: bytes
    ) -> PersoScript: ...


class Transport(Protocol):
    async def eject(self, reader: str) -> str | None: ...


@dataclass
class ReaderActivity:
    """What one reader is doing, for /ready and for tests."""

    reader: str
    activity: str = "starting"
    encoded: int = 0
    spoiled: int = 0
    chips_rejected: int = 0
    identify_failures: int = 0  # in a row, on the chip now in the reader
    busy_s: float = 0.0  # time spent on encoded cards, from claim to commit
    last_problem: str | None = None
    last_ejected: str | None = None
