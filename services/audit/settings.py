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
    keymgmt_url: str = Field(
        default="http://127.0.0.1:8102", description="keymgmt, which signs checkpoints"
    )
    log_origin: str = Field(
        default="cardbureau/audit", description="the log's name inside every signed checkpoint"
    )
    bureau_issuer_id: str = Field(
        default="bureau", description="issuer_id of the bureau's own events (log.checkpoint)"
    )
    tree_interval_seconds: float = Field(
        default=1.0, gt=0, description="how often the Merkle tree is extended over new entries"
    )
    witness_url: str = Field(
        default="",
        description="the witness that cosigns each checkpoint (empty: checkpoints unwitnessed)",
    )
    witness_vkey: str = Field(
        default="", description="the witness's C2SP vkey (empty: as the witness gives it)"
    )
    checkpoint_interval_seconds: float = Field(
        default=60.0, ge=0, description="how often a checkpoint is signed (0: never)"
    )
