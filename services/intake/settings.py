from __future__ import annotations

from pydantic import Field, field_validator

from services.intake.schemas import MAX_CARDS_PER_ORDER
from services.intake.webhook_targets import parse_networks
from shared.settings import BureauSettings


class IntakeSettings(BureauSettings):
    port: int = 8101
    keymgmt_url: str = "http://127.0.0.1:8102"
    max_cards_per_order: int = Field(default=100_000, ge=1, le=MAX_CARDS_PER_ORDER)
    # The largest JSON order body (POST /v1/orders), refused with 413 while it streams in.
    order_max_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Keys the HMAC that recognises a replayed order body without keeping its PANs.
    idempotency_secret: str = "intake-dev-idempotency-secret"

    # Bulk files: cards per chunk (one vault call, one insert), the longest line accepted, the
    # largest file, and how many problems a refused file's report lists at most.
    bulk_chunk: int = Field(default=250, ge=1, le=10_000)
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
    # Private networks an operator allows webhooks into (comma-separated CIDRs, e.g. an
    # issuer's private link, or a test receiver's 127.0.0.1/32); link-local never.
    webhook_allowed_networks: str = ""

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)  # ValueError names the bad network
        return value

    def secret_values(self) -> dict[str, str]:
        return {
            **super().secret_values(),
            "idempotency_secret": self.idempotency_secret,
            "webhook_key": self.webhook_key,
        }
