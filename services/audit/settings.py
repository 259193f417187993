"""Audit settings (BUREAU_* environment variables, like every service)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import BureauSettings


class AuditSettings(BureauSettings):
    audit_port: int = 8107
    stale_after_seconds: float = Field(
        default=300.0,
        gt=0,
        description="a batch with no event for this long is swept: reconciled or reported",
    )
    sweep_interval_seconds: float = Field(
        default=30.0, gt=0, description="how often the sweep looks for stale batches"
    )
    sweep_batch_limit: int = Field(
        default=100, ge=1, description="stale batches evaluated per sweep round"
    )
