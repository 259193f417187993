"""Settings shared by every service (pydantic-settings, BUREAU_ prefix).

Outside dev and test, the guard refuses development values, weak tokens and one secret given
to two principals or services (shared/credentials.py). Its messages and pydantic's name the
setting and the entry only: `hide_input_in_errors` keeps the input, which holds every secret,
out of a ValidationError's text (and so out of the log a refused start writes).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.credentials import (
    VERIFIER_PREFIX,
    Credential,
    production_problems,
    secret_digest,
    split_entries,
)

# Checked for development values only: the database URL's password is its operator's to make.
OPAQUE_SECRETS = frozenset({"BUREAU_DATABASE_URL"})

KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")


class BureauSettings(BaseSettings):
    """Every service's settings extend this. Values come from BUREAU_* environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="BUREAU_", extra="ignore", hide_input_in_errors=True
    )

    environment: str = Field(default="dev", description="dev, test or prod")
    database_url: str = "postgresql+asyncpg://bureau:bureau-dev@127.0.0.1:55432/bureau"
    # Least-privilege Postgres (docs/deploy.md, "Database roles"): a service connecting as its
    # runtime role runs with migrate_on_start false and only checks its schema is migrated;
    # `python -m shared.migrate <service>` migrates it as the owner (shared/migrate.py).
    migrate_on_start: bool = True
    # Connections the service keeps open to PostgreSQL; as many more are opened in a burst and
    # closed after it. Each opened one costs a backend fork, SCRAM and preparing every
    # statement again: at 5 pool connections keymgmt opened hundreds a minute under load.
    database_pool_size: int = Field(default=10, ge=1, le=50)
    kafka_bootstrap: str = "127.0.0.1:19092"
    # Kafka security (shared/kafka_client.py builds every client's keywords from these): the
    # local stack and Kubernetes use SASL_SSL with SCRAM-SHA-512 and one user per workload.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_username: str | None = None
    kafka_password: str | None = None
    kafka_ca_file: str | None = Field(default=None, description="PEM CA of the brokers' certs")
    topic_prefix: str = "bureau"
    http_host: str = "127.0.0.1"
    log_level: str = "INFO"
    trace_file: str | None = Field(default=None, description="write finished spans as JSON lines")
    # Service-to-service bearer tokens (name=token,...): this service's own token, and for the
    # services that call it a token or its verifier `sha256:<hex>`. Real deployments mount
    # these from the workload's own Secret (docs/deploy.md); the local stack's services get
    # theirs, and BUREAU_PRINCIPALS, from <run>/creds/<workload>.tokens.env (deploy/local/
    # tokens.py). The development defaults below (and of BUREAU_PRINCIPALS) serve only the
    # services a test builds in its own process; the guard refuses them outside dev and test.
    service_tokens: str = ",".join(
        f"{name}={name}-dev-token"
        for name in ("intake", "electrical", "graphical", "qa", "fulfillment", "audit")
    )

    # People and stations: `role:name[:issuer]=token,...` (operators, auditors, custodians, ...);
    # a token may be given as its verifier `sha256:<hex>`, as production does.
    principals: str = (
        "operator:olga=operator-dev-token,auditor:ann=auditor-dev-token,admin:root=admin-dev-token,"
        "station:station-a=station-a-dev-token,station:qa-1=qa-1-dev-token,"
        # Dual control (issue 15): a second operator confirms what the first asked; custodians
        # authenticate each ceremony step with their own token.
        "operator:oscar=operator-2-dev-token,"
        "custodian:cora=custodian-1-dev-token,custodian:cyril=custodian-2-dev-token"
    )

    @model_validator(mode="after")
    def _check_credentials(self) -> BureauSettings:
        for setting, spec in (
            ("BUREAU_SERVICE_TOKENS", self.service_tokens),
            ("BUREAU_PRINCIPALS", self.principals),
        ):
            for number, (name, value) in enumerate(split_entries(spec), 1):
                if not name or not value:  # then `name` may be a token: never quote it
                    raise ValueError(f"{setting}: entry {number} is not name=token")
                try:
                    secret_digest(value)
                except ValueError as exc:
                    raise ValueError(f"{setting} {name}: {exc}") from None
        for credential in self.credentials():
            if credential.entry == "" and credential.is_verifier:
                raise ValueError(f"{credential.label} is a verifier: it needs the secret itself")
        return self

    @model_validator(mode="after")
    def _refuse_dev_secrets_outside_dev(self) -> BureauSettings:
        if self.environment not in ("dev", "test"):
            problems = production_problems(self.credentials(), OPAQUE_SECRETS)
            if self.migrate_on_start:
                # A process that can migrate holds the schema owner: only the migration Job may.
                problems.append(
                    "BUREAU_MIGRATE_ON_START must be false: migrations run as the schema owner"
                    " in their own job (python -m shared.migrate)"
                )
            if problems:
                raise ValueError(
                    f"refused in BUREAU_ENVIRONMENT={self.environment}: " + "; ".join(problems)
                )
        return self

    @model_validator(mode="after")
    def _kafka_security(self) -> BureauSettings:
        protocol, mechanism = self.kafka_security_protocol, self.kafka_sasl_mechanism
        if protocol not in KAFKA_PROTOCOLS:
            raise ValueError(
                f"kafka_security_protocol {protocol!r} is none of {', '.join(KAFKA_PROTOCOLS)}"
            )
        if protocol.startswith("SASL_"):
            if mechanism not in KAFKA_SASL_MECHANISMS:
                raise ValueError(
                    f"kafka_sasl_mechanism {mechanism!r} is none of "
                    f"{', '.join(KAFKA_SASL_MECHANISMS)}"
                )
            missing = [n for n in ("kafka_username", "kafka_password") if not getattr(self, n)]
            if missing:
                raise ValueError(
                    f"kafka_security_protocol {protocol} needs {' and '.join(missing)}"
                )
        if self.environment not in ("dev", "test") and protocol != "SASL_SSL":
            raise ValueError(
                f"kafka_security_protocol must be SASL_SSL in {self.environment} (is {protocol}):"
                " the bus carries no event unauthenticated or in clear"
            )
        return self

    def secret_values(self) -> dict[str, str]:
        return {
            "database_url": self.database_url,
            "service_tokens": self.service_tokens,
            "principals": self.principals,
        } | ({"kafka_password": self.kafka_password} if self.kafka_password else {})

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """repr() and str() show every setting but the secrets (secret_values), so a settings
        object that reaches a log or a traceback never carries one."""
        hidden = set(self.secret_values())
        for name, value in super().__repr_args__():
            yield name, ("<hidden>" if name in hidden else value)

    def credentials(self) -> list[Credential]:
        """Every secret, one per token or verifier, named by its setting and entry."""
        found = []
        for field, value in self.secret_values().items():
            setting = f"BUREAU_{field.upper()}"
            if field in ("service_tokens", "principals"):
                found += [Credential(setting, n, v) for n, v in split_entries(value)]
            else:
                found.append(Credential(setting, "", value))
        return found

    def topic(self, stream: str) -> str:
        return f"{self.topic_prefix}.{stream}"

    def token_for(self, service: str) -> str:
        """This service's own token (to call keymgmt): refused when only a verifier is given."""
        token = self.parsed_service_tokens().get(service)
        if token is None:
            raise ValueError(f"BUREAU_SERVICE_TOKENS has no entry for {service}")
        if token.startswith(VERIFIER_PREFIX):
            raise ValueError(
                f"BUREAU_SERVICE_TOKENS holds only a verifier for {service}: it needs its own token"
            )
        return token

    def parsed_service_tokens(self) -> dict[str, str]:
        return dict(split_entries(self.service_tokens))
