"""The card printer as the print spooler sees it: an IPP printer (shared/ipp.py), or in tests
a fake with the same calls: the job calls of shared/print_jobs.py, the printer's own status.
Submitting names the job after the card, so a job whose submission may or may not have
reached the printer can be found again by name."""

from __future__ import annotations

from typing import Protocol

from shared.ipp import IppClient, PrinterStatus
from shared.print_jobs import JobPrinter


class Printer(JobPrinter, Protocol):
    name: str

    async def printer(self) -> PrinterStatus: ...

    async def aclose(self) -> None: ...


class IppPrinter(IppClient):
    """A named IPP printer reached over TLS only (`ipps://host:port/path`), its certificate
    verified against `ca_file` (None: the system's trust store) and its name against the
    URI's host: a printer that does not verify receives no card face (IppUntrusted)."""

    def __init__(
        self, name: str, uri: str, *, timeout_s: float = 10.0, ca_file: str | None = None
    ) -> None:
        super().__init__(
            uri, user="graphical", timeout_s=timeout_s, ca_file=ca_file, require_tls=True
        )
        self.name = name


def job_name_for(card_id: object) -> str:
    """The IPP job-name of a card's print job: one per card, ever."""
    return f"card-{card_id}"
