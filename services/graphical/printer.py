"""Printers. In this pass the spool directory IS the printer; an IPP printer will implement
the same `Printer` protocol later (submit returns where the job went)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from uuid import UUID

from services.graphical.service import spool_name


@dataclass(frozen=True)
class PrintReceipt:
    printer: str
    location: str


class Printer(Protocol):
    name: str

    def submit(self, batch_id: UUID, card_id: UUID, png: bytes) -> PrintReceipt: ...


class SpoolPrinter:
    """Writes each card face as `<spool>/<batch>/<card>.png`, atomically (temp file + rename),
    so a re-submitted job overwrites the same file instead of printing a second card."""

    def __init__(self, name: str, spool_dir: Path) -> None:
        self.name = name
        self.spool_dir = spool_dir

    def submit(self, batch_id: UUID, card_id: UUID, png: bytes) -> PrintReceipt:
        target = self.spool_dir / spool_name(batch_id, card_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".png.partial")
        with partial.open("wb") as out:
            out.write(png)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
        return PrintReceipt(self.name, str(target))
