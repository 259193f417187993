"""Settings of the graphical service (BUREAU_* environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings import BureauSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEJAVU_SANS = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


class GraphicalSettings(BureauSettings):
    graphical_port: int = 8104
    run_dir: Path = Field(default=REPO_ROOT / ".run", description="BUREAU_RUN_DIR")
    keymgmt_url: str = "http://127.0.0.1:8102"
    keymgmt_timeout_s: float = Field(default=5.0, gt=0)
    keymgmt_attempts: int = Field(default=4, ge=1, description="tries per call before giving up")
    graphical_spool_dir: Path | None = Field(
        default=None, description="default <run_dir>/graphical/spool; one folder per batch"
    )
    graphical_printer: str = Field(default="spool-1", description="printer name on print jobs")
    graphical_font: Path = Field(default=DEJAVU_SANS, description="TrueType font for card faces")

    @property
    def spool_dir(self) -> Path:
        return self.graphical_spool_dir or self.run_dir / "graphical" / "spool"
