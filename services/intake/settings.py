from __future__ import annotations

from pydantic import Field

from shared.settings import BureauSettings


class IntakeSettings(BureauSettings):
    port: int = 8101
    keymgmt_url: str = "http://127.0.0.1:8102"
    max_cards_per_order: int = Field(default=100_000, ge=1)
    # Keys the HMAC that recognises a replayed order body without keeping its PANs.
    idempotency_secret: str = "intake-dev-idempotency-secret"

    # Bulk files: cards per chunk (one vault call, one insert), the longest line accepted, the
    # largest file, and how many problems a refused file's report lists at most.
    bulk_chunk: int = Field(default=1000, ge=1, le=10_000)
    bulk_max_line_bytes: int = Field(default=4096, ge=256)
    bulk_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    bulk_max_reported_errors: int = Field(default=100_000, ge=1)
    # Where a bulk file is staged between validation and vaulting, sealed under a key that
    # lives only in memory for that request (default: the system's temp directory).
    bulk_spool_dir: str | None = None

    # Seals each issuer's webhook secret at rest (AES-256-GCM, key derived from this value).
    webhook_key: str = "intake-dev-webhook-key"
    webhook_backoff_base: float = Field(default=2.0, gt=0, description="seconds, first retry")
    webhook_backoff_max: float = Field(default=3600.0, gt=0)
    webhook_max_attempts: int = Field(default=15, ge=1)
    webhook_timeout: float = Field(default=10.0, gt=0)
    webhook_poll_interval: float = Field(default=1.0, gt=0)

    def secret_values(self) -> dict[str, str]:
        return {
            **super().secret_values(),
            "idempotency_secret": self.idempotency_secret,
            "webhook_key": self.webhook_key,
        }
