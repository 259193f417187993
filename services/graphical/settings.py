"""Settings of the graphical service (BUREAU_* environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from shared.ipp import printer_url
from shared.settings import BureauSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEJAVU_SANS = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


class GraphicalSettings(BureauSettings):
    graphical_port: int = 8104
    run_dir: Path = Field(default=REPO_ROOT / ".run", description="BUREAU_RUN_DIR")
    keymgmt_url: str = "http://127.0.0.1:8102"
    keymgmt_timeout_s: float = Field(default=5.0, gt=0)
    keymgmt_attempts: int = Field(default=4, ge=1, description="tries per call before giving up")
    card_printer_uri: str = Field(
        default="ipps://localhost:8631/ipp/print",
        description="BUREAU_CARD_PRINTER_URI: the card printer, ipps:// only (the face carries "
        "the cardholder's name and CVV2; deploy/local/printers.sh serves it over TLS)",
    )
    card_printer_ca: str | None = Field(
        default=None,
        description="BUREAU_CARD_PRINTER_CA: PEM file of the CA the card printer's certificate "
        "must chain to (the local stack's: <run>/printers/tls/ca.crt); unset: the system's",
    )
    graphical_printer: str = Field(default="card-1", description="printer name on print jobs")
    graphical_font: Path = Field(default=DEJAVU_SANS, description="TrueType font for card faces")
    printer_timeout_s: float = Field(default=10.0, gt=0, description="one IPP request")
    print_poll_s: float = Field(default=0.2, gt=0, description="job state polling interval")
    print_backoff_s: float = Field(default=0.5, gt=0, description="first retry, printer down")
    print_backoff_max_s: float = Field(default=10.0, gt=0)
    print_max_rejections: int = Field(default=3, ge=1, description="then the card is spoiled")

    @field_validator("card_printer_uri")
    @classmethod
    def _ipps_only(cls, uri: str) -> str:
        if printer_url(uri)[1]:
            return uri
        raise ValueError(
            "the card printer is reached over ipps:// only: a card face carries its CVV2"
        )
