"""Settings of the fulfillment service (BUREAU_* environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings import BureauSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


class FulfillmentSettings(BureauSettings):
    fulfillment_port: int = 8106
    run_dir: Path = Field(default=REPO_ROOT / ".run", description="BUREAU_RUN_DIR")
    keymgmt_url: str = "http://127.0.0.1:8102"
    keymgmt_timeout_s: float = Field(default=5.0, gt=0)
    keymgmt_attempts: int = Field(default=4, ge=1, description="tries per call before giving up")
    fulfillment_manifest_dir: Path | None = Field(
        default=None, description="default <run_dir>/fulfillment/manifests"
    )
    fulfillment_courier: str = Field(default="bureau-courier", min_length=1, max_length=64)
    fulfillment_shipment_max_cards: int = Field(
        default=2000,
        ge=1,
        le=10_000,
        description="cards per shipment (a courier consignment): a batch ships as several, so"
        " no shipment.dispatched outgrows a Kafka record and no manifest a batch's memory",
    )
    fulfillment_inserter_dir: Path | None = Field(
        default=None, description="default <run_dir>/fulfillment/inserter: carrier letters"
    )

    @property
    def inserter_dir(self) -> Path:
        return self.fulfillment_inserter_dir or self.run_dir / "fulfillment" / "inserter"

    @property
    def manifest_dir(self) -> Path:
        return self.fulfillment_manifest_dir or self.run_dir / "fulfillment" / "manifests"
