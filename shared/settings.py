"""Settings shared by every service (pydantic-settings, BUREAU_ prefix)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET_MARKER = "dev"


class BureauSettings(BaseSettings):
    """Every service's settings extend this. Values come from BUREAU_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="BUREAU_", extra="ignore")

    environment: str = Field(default="dev", description="dev, test or prod")
    database_url: str = "postgresql+asyncpg://bureau:bureau-dev@127.0.0.1:55432/bureau"
    kafka_bootstrap: str = "127.0.0.1:19092"
    topic_prefix: str = "bureau"
    http_host: str = "127.0.0.1"
    log_level: str = "INFO"
    trace_file: str | None = Field(default=None, description="write finished spans as JSON lines")
    # Service-to-service bearer tokens (name=token,...). Real deployments mount these from Secrets.
    service_tokens: str = ",".join(
        f"{name}={name}-dev-token"
        for name in ("intake", "electrical", "graphical", "qa", "fulfillment", "audit")
    )

    # People and stations: `role:name[:issuer]=token,...` (operators, auditors, custodians, ...).
    principals: str = (
        "operator:olga=operator-dev-token,auditor:ann=auditor-dev-token,admin:root=admin-dev-token,"
        "station:station-a=station-a-dev-token,station:qa-1=qa-1-dev-token,"
        # Dual control (issue 15): a second operator confirms what the first asked; custodians
        # authenticate each ceremony step with their own token.
        "operator:oscar=operator-2-dev-token,"
        "custodian:cora=custodian-1-dev-token,custodian:cyril=custodian-2-dev-token"
    )

    @model_validator(mode="after")
    def _refuse_dev_secrets_outside_dev(self) -> BureauSettings:
        if self.environment not in ("dev", "test"):
            for name, value in self.secret_values().items():
                if DEV_SECRET_MARKER in value:
                    raise ValueError(
                        f"{name} still holds a development secret in {self.environment}"
                    )
        return self

    def secret_values(self) -> dict[str, str]:
        return {
            "database_url": self.database_url,
            "service_tokens": self.service_tokens,
            "principals": self.principals,
        }

    def topic(self, stream: str) -> str:
        return f"{self.topic_prefix}.{stream}"

    def token_for(self, service: str) -> str:
        return self.parsed_service_tokens()[service]

    def parsed_service_tokens(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for item in self.service_tokens.split(",") if "=" in item)
        return {name.strip(): token.strip() for name, token in pairs}
