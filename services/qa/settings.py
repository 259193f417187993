"""Settings of the QA service (BUREAU_* environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.pcsc import load_readers
from shared.settings import BureauSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
QA_READER_INDEX = 4  # the fifth reader of readers.json, in the feeder's manual mode


class QaSettings(BureauSettings):
    qa_port: int = 8105
    run_dir: Path = Field(default=REPO_ROOT / ".run", description="BUREAU_RUN_DIR")
    pcsc_readers: str | None = Field(
        default=None, description="BUREAU_PCSC_READERS: readers.json of the local pcscd"
    )
    qa_reader: str = Field(default="", description="PC/SC name; default the 5th of readers.json")
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
    # The CA public keys QA's EMV kernel trusts, by RID and index (docs/terminal.md).
    qa_ca_keys: Path | None = Field(
        default=None, description="BUREAU_QA_CA_KEYS; default <run_dir>/emv/ca-public-keys.json"
    )

    @property
    def spool_dir(self) -> Path:
        return self.card_printer_spool or self.run_dir / "printers" / "card" / "spool"

    @property
    def ca_keys_path(self) -> Path:
        return self.qa_ca_keys or self.run_dir / "emv" / "ca-public-keys.json"

    def reader_name(self) -> str:
        """The QA reader. Loading readers.json also points libpcsclite at its pcscd."""
        readers = load_readers(self.pcsc_readers) if self.pcsc_readers else []
        if self.qa_reader:
            return self.qa_reader
        if len(readers) <= QA_READER_INDEX:
            raise ValueError("no QA reader: set BUREAU_QA_READER or BUREAU_PCSC_READERS")
        return readers[QA_READER_INDEX].name
