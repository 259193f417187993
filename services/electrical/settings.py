"""Settings of the electrical station agent (BUREAU_* environment variables)."""

from __future__ import annotations

from pydantic import Field

from shared.pcsc import load_readers
from shared.settings import BureauSettings

STATION_READER_COUNT = 4  # a station takes the first four readers of readers.json by default


class ElectricalSettings(BureauSettings):
    electrical_port: int = 8103
    station_id: str = Field(default="station-a", min_length=1, max_length=64)
    # The station principal's bearer token for keymgmt (BUREAU_PRINCIPALS station:<id>=<token>).
    station_token: str = "station-a-dev-token"
    pcsc_readers: str | None = Field(
        default=None, description="BUREAU_PCSC_READERS: readers.json of the local pcscd"
    )
    station_readers: str = Field(
        default="",
        description="PC/SC reader names, comma separated; default the first four of readers.json",
    )
    feeder_url: str = Field(
        default="http://127.0.0.1:8110", description="the machine's transport (card feeder)"
    )
    keymgmt_url: str = "http://127.0.0.1:8102"
    keymgmt_timeout_s: float = Field(default=5.0, gt=0)
    keymgmt_backoff_s: float = Field(default=0.2, gt=0, description="first retry delay")
    keymgmt_backoff_max_s: float = Field(default=5.0, gt=0, description="longest retry delay")
    feeder_timeout_s: float = Field(default=5.0, gt=0)
    queue_poll_s: float = Field(default=0.5, gt=0, description="queue re-check while idle")

    def secret_values(self) -> dict[str, str]:
        return {**super().secret_values(), "station_token": self.station_token}

    def reader_names(self) -> list[str]:
        """This station's readers. Loading readers.json also points libpcsclite at its pcscd."""
        configured = [name.strip() for name in self.station_readers.split(",") if name.strip()]
        readers = load_readers(self.pcsc_readers) if self.pcsc_readers else []
        if configured:
            return configured
        if not readers:
            raise ValueError(
                "no station readers: set BUREAU_STATION_READERS or BUREAU_PCSC_READERS"
            )
        return [reader.name for reader in readers[:STATION_READER_COUNT]]
