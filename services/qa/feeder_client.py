"""The QA machine's transport, as QA needs it: put a printed card into the QA reader by chip
serial, and take it out again (no blank comes in). The client is shared/feeder_client.py."""

from __future__ import annotations

from typing import Protocol

from shared.feeder_client import CardNotFound as CardNotFound
from shared.feeder_client import FeederUnavailable as FeederUnavailable


class Feeder(Protocol):
    async def insert(self, reader: str, chip_serial: str) -> None: ...

    async def eject(self, reader: str) -> str | None: ...
