from __future__ import annotations

from pydantic import Field

from shared.settings import BureauSettings


class IntakeSettings(BureauSettings):
    port: int = 8101
    keymgmt_url: str = "http://127.0.0.1:8102"
    max_cards_per_order: int = Field(default=100_000, ge=1)
    # Keys the HMAC that recognises a replayed order body without keeping its PANs.
    idempotency_secret: str = "intake-dev-idempotency-secret"

    def secret_values(self) -> dict[str, str]:
        return {**super().secret_values(), "idempotency_secret": self.idempotency_secret}
