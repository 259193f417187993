"""Witness settings (BUREAU_WITNESS_* environment variables). Deliberately not BureauSettings:
the witness gets no database, Kafka or service credential."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.checkpoint_note import ECDSA, NoteError, Vkey, check_name, parse_vkey


class WitnessSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BUREAU_WITNESS_", extra="ignore")

    name: str = Field(
        default="witness.cardbureau.local/w1", description="the witness's key name (C2SP)"
    )
    host: str = Field(default="127.0.0.1", description="the address it listens on")
    port: int = 8108
    dir: Path = Field(
        default=Path(".run/witness"),
        description="its store: Ed25519 key and the latest cosigned checkpoint per origin",
    )
    log_vkeys: str = Field(
        default="",
        description="comma-separated C2SP vkeys of the logs it witnesses (key name = origin)",
    )
    log_level: str = "INFO"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            return check_name(value)
        except NoteError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("log_vkeys")
    @classmethod
    def _vkeys(cls, value: str) -> str:
        for item in filter(None, (v.strip() for v in value.split(","))):
            try:
                vkey = parse_vkey(item)
            except NoteError as exc:
                raise ValueError(f"BUREAU_WITNESS_LOG_VKEYS: {exc}") from exc
            if vkey.kind != ECDSA:
                raise ValueError(f"BUREAU_WITNESS_LOG_VKEYS: {vkey.name} is not a log key")
        return value

    def logs(self) -> dict[str, list[Vkey]]:
        """Trusted log keys by origin (a log's key name is its origin)."""
        found: dict[str, list[Vkey]] = {}
        for item in filter(None, (v.strip() for v in self.log_vkeys.split(","))):
            vkey = parse_vkey(item)
            found.setdefault(vkey.name, []).append(vkey)
        return found
