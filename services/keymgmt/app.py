"""keymgmt, the only door to the HSM: wiring only (docs/keymgmt.md names the feature packages
and which of the bureau's jobs each holds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI

from services.keymgmt.deps import KeymgmtDeps
from services.keymgmt.emv.api import router as emv_router
from services.keymgmt.emv.icc_pool import PoolRefiller
from services.keymgmt.handlers import HANDLERS
from services.keymgmt.hsm.gate import HsmReadiness
from services.keymgmt.keys.api import router as keys_router
from services.keymgmt.keys.keeper import HsmKeeper
from services.keymgmt.keys.oda_api import router as oda_router
from services.keymgmt.keys.signing_api import router as signing_router
from services.keymgmt.perso.api import router as perso_router
from services.keymgmt.perso.planning_api import router as planning_router
from services.keymgmt.pin_mailer.api import router as pin_mailer_router
from services.keymgmt.repository import KeymgmtRepository
from services.keymgmt.settings import MIGRATIONS as _MIGRATIONS
from services.keymgmt.settings import KeymgmtSettings
from services.keymgmt.sim.api import router as sim_router
from services.keymgmt.vault.api import router as vault_router
from services.keymgmt.vault.retention import RetentionPurger
from shared.auth import Authenticator
from shared.handlers import bind_handlers
from shared.issuer_tokens import RemoteIssuerTokens
from shared.kafka_access import subscriptions
from shared.service import ServiceRuntime, create_app

NAME = "keymgmt"
MIGRATIONS: Path = _MIGRATIONS
# intake: orders and cancellations; qa and fulfillment: the milestones retention waits for.
SUBSCRIBE = subscriptions("keymgmt")
ROUTERS = (
    keys_router,
    signing_router,
    oda_router,
    vault_router,
    perso_router,
    planning_router,
    emv_router,
    sim_router,
    pin_mailer_router,
)


def bootstrap(
    settings: KeymgmtSettings,
    *,
    schema: str | None = None,
    consumer_group: str | None = None,
    **overrides: Any,
) -> ServiceRuntime:
    """Wire the HSM keeper (a worker filling the gate), HSM readiness, the handler table, the
    repository and the consumer. Tests pass their own schema and settings, and may pass any
    field of KeymgmtDeps (a gate, a PIN printer) as a keyword override."""
    deps = KeymgmtDeps(settings=settings, **overrides)
    runtime = ServiceRuntime(
        name=NAME,
        settings=settings,
        migrations=MIGRATIONS,
        handlers=bind_handlers(HANDLERS, deps),
        subscribe=SUBSCRIBE,
        workers=[
            HsmKeeper(settings, deps.gate),
            RetentionPurger(
                settings.cardholder_retention_days, settings.retention_purge_interval_seconds
            ),
            PoolRefiller(deps.gate, settings.icc_pool_low, settings.icc_pool_target),
        ],
        schema=schema or settings.keymgmt_schema,
        consumer_group=consumer_group,
        repository=KeymgmtRepository,
        deps=deps,
        readiness=[HsmReadiness(deps.gate, settings.hsm_ping_timeout_seconds)],
    )
    runtime.on_stop(deps.pin_printer.aclose)
    return runtime


def build_app(runtime: ServiceRuntime, issuer_tokens: Authenticator | None = None) -> FastAPI:
    """The API; issuer tokens are verified by intake (`issuer_tokens`, by default from
    settings.intake_url), after the configured principals so those never cause a call."""
    app = create_app(
        runtime,
        title="cardbureau keymgmt",
        description="The only door to the HSM: key inventory, PAN vault, data preparation, "
        "perso scripts for stations, chip read-back and ARQC checks for QA.",
        routers=ROUTERS,
    )
    settings: KeymgmtSettings = runtime.settings  # type: ignore[assignment]
    if issuer_tokens is None and settings.intake_url:
        issuer_tokens = RemoteIssuerTokens(settings.intake_url)
    if issuer_tokens is not None:
        app.state.authenticators.append(issuer_tokens)
    return app
