"""Settings of the QA service (BUREAU_* environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.pcsc import load_readers
from shared.settings import BureauSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
QA_READER_INDEX = 4  # readers.json from the fifth on are QA's, in the feeder's manual mode


class QaSettings(BureauSettings):
    qa_port: int = 8105
    run_dir: Path = Field(default=REPO_ROOT / ".run", description="BUREAU_RUN_DIR")
    pcsc_readers: str | None = Field(
        default=None, description="BUREAU_PCSC_READERS: readers.json of the local pcscd"
    )
    qa_reader: str = Field(default="", description="PC/SC name of a one-position QA station")
    qa_readers: str = Field(
        default="",
        description="PC/SC names of this station's QA positions, comma separated; default every"
        " reader of readers.json after the encoding station's first four",
    )
    qa_station: str = Field(
        default="qa-1",
        pattern=r"^[a-z0-9][a-z0-9-]{0,39}$",
        description="this QA station's name: keymgmt answers a card's read-backs at one station",
    )
    feeder_url: str = Field(default="http://127.0.0.1:8110", description="the QA machine's feeder")
    feeder_timeout_s: float = Field(default=5.0, gt=0)
    keymgmt_url: str = "http://127.0.0.1:8102"
    keymgmt_timeout_s: float = Field(default=5.0, gt=0)
    keymgmt_backoff_s: float = Field(default=0.2, gt=0)
    keymgmt_backoff_max_s: float = Field(default=5.0, gt=0)
    # The card printer's spool: documents received and outputs, per job (print_check.py).
    card_printer_spool: Path | None = Field(
        default=None, description="BUREAU_CARD_PRINTER_SPOOL; default <run_dir>/printers/card/spool"
    )
    qa_card_timeout_s: float = Field(default=5.0, gt=0, description="wait for an inserted card")
    qa_machine_backoff_s: float = Field(default=1.0, gt=0, description="pause after a fault")
    queue_poll_s: float = Field(default=0.5, gt=0)
    # The test transaction QA's GENERATE AC asks for (EMV Book 3 / Book 4 data elements).
    qa_amount_minor: int = Field(default=100, ge=0, lt=10**12, description="amount, minor units")
    qa_terminal_country: str = Field(default="0826", pattern=r"^\d{4}$", description="ISO 3166")
    qa_currency: str = Field(default="0826", pattern=r"^\d{4}$", description="ISO 4217 numeric")

    @property
    def spool_dir(self) -> Path:
        return self.card_printer_spool or self.run_dir / "printers" / "card" / "spool"

    def reader_names(self) -> list[str]:
        """The QA positions' readers. Loading readers.json also points libpcsclite at its
        pcscd."""
        readers = load_readers(self.pcsc_readers) if self.pcsc_readers else []
        configured = [name.strip() for name in self.qa_readers.split(",") if name.strip()]
        if self.qa_reader:
            configured = [self.qa_reader, *configured]
        if configured:
            if len(set(configured)) != len(configured):
                raise ValueError(f"a QA reader is named twice: {configured}")
            return configured
        if len(readers) <= QA_READER_INDEX:
            raise ValueError("no QA reader: set BUREAU_QA_READERS or BUREAU_PCSC_READERS")
        return [reader.name for reader in readers[QA_READER_INDEX:]]
