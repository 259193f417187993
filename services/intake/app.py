"""Intake: the issuer-facing API (orders) and the vault's blank-stock counter."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

from fastapi import FastAPI

from services.intake import admin_api, bulk_api, orders_api, stock_api, tracking_api, whoami_api
from services.intake.deps import IntakeDeps
from services.intake.handlers import HANDLERS
from services.intake.orders import VAULT_RETRY, VAULT_TIMEOUT, PanVault
from services.intake.repository import IntakeRepository
from services.intake.settings import IntakeSettings
from services.intake.takeback import TakeBackWorker
from services.intake.webhooks import Deliverer, SecretBox
from shared.auth import Principal, token_digest
from shared.handlers import bind_handlers
from shared.kafka_access import subscriptions
from shared.keymgmt.client import KeymgmtClient
from shared.service import ServiceRuntime, create_app

API_DESCRIPTION = """Issuers post card orders and follow them; operators count blank stock.

Every call sends `Authorization: Bearer <token>`. An issuer's token (made by an admin with
`POST /v1/admin/issuers/{issuer_id}/credentials`, shown once) sees only that issuer's orders,
cards and webhook: anything else answers 404. A walk-through with examples is in
docs/intake-api.md.
"""

NAME = "intake"
MIGRATIONS = Path(__file__).parent / "migrations"
# The stages of the card lifecycle the status projection follows (topics of these services).
SUBSCRIBE = subscriptions("intake")


def bootstrap(
    settings: IntakeSettings,
    *,
    schema: str | None = None,
    consumer_group: str | None = None,
    subscribe: Sequence[str] = SUBSCRIBE,
    vault: PanVault | None = None,
    deliverer: Deliverer | None = None,
) -> ServiceRuntime:
    """Intake's runtime. Tests pass their own schema, or a vault client bound to another
    transport (the real keymgmt app in-process); a benchmark subscribes to nothing."""
    vault = vault or KeymgmtClient(
        settings.keymgmt_url,
        settings.token_for("intake"),
        timeout_s=VAULT_TIMEOUT,
        policy=VAULT_RETRY,
    )
    deliverer = deliverer or Deliverer(settings, SecretBox(settings.webhook_key))
    deps = IntakeDeps(settings=settings, vault=vault, deliverer=deliverer)
    runtime = ServiceRuntime(
        name=NAME,
        settings=settings,
        migrations=MIGRATIONS,
        schema=schema,
        consumer_group=consumer_group,
        handlers=bind_handlers(HANDLERS, deps),
        subscribe=subscribe,
        workers=[deliver_webhooks, TakeBackWorker(vault)],
        repository=IntakeRepository,
        deps=deps,
    )
    runtime.on_stop(vault.aclose)
    runtime.on_stop(deliverer.close)
    return runtime


async def deliver_webhooks(runtime: ServiceRuntime) -> None:
    deps: IntakeDeps = runtime.deps
    await deps.deliverer.run(runtime.unit_of_work)


async def issuer_credentials(runtime: ServiceRuntime, token: str) -> Principal | None:
    """An issuer's API token (stored as a digest) names the issuer it speaks for."""
    async with runtime.unit_of_work() as uow:
        issuer = await uow.repo.issuer_for_digest(token_digest(token))
    return None if issuer is None else Principal("issuer", issuer, issuer)


def build_app(runtime: ServiceRuntime) -> FastAPI:
    return create_app(
        runtime,
        title="Card bureau intake API",
        description=API_DESCRIPTION,
        authenticators=[partial(issuer_credentials, runtime)],
        routers=[
            admin_api.router,
            stock_api.router,
            orders_api.router,
            bulk_api.router,
            tracking_api.router,
            whoami_api.router,
        ],
    )
