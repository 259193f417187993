"""The fulfillment service: carriers, PIN mailers, card/carrier matching, dispatch."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from fastapi import FastAPI

from services.fulfillment import api
from services.fulfillment.deps import FulfillmentDeps, MailingSource
from services.fulfillment.handlers import HANDLERS
from services.fulfillment.inserter import Inserter
from services.fulfillment.manifests import ManifestWriter
from services.fulfillment.repository import FulfillmentRepository
from services.fulfillment.settings import FulfillmentSettings
from shared.handlers import bind_handlers
from shared.kafka_access import subscriptions
from shared.keymgmt.client import KeymgmtClient, RetryPolicy
from shared.service import ServiceRuntime, create_app

NAME = "fulfillment"
MIGRATIONS = Path(__file__).parent / "migrations"
SUBSCRIBE = subscriptions("fulfillment")


def bootstrap(
    settings: FulfillmentSettings,
    *,
    schema: str | None = None,
    consumer_group: str | None = None,
    keymgmt: MailingSource | None = None,
) -> ServiceRuntime:
    """Wire keymgmt and the manifest writer into the runtime. Tests pass their own schema."""
    owned: KeymgmtClient | None = None
    if keymgmt is None:
        client = KeymgmtClient(
            settings.keymgmt_url,
            settings.token_for(NAME),
            timeout_s=settings.keymgmt_timeout_s,
            policy=RetryPolicy(max_attempts=settings.keymgmt_attempts),
        )
        keymgmt = owned = client
    deps = FulfillmentDeps(
        keymgmt=keymgmt,
        manifests=ManifestWriter(settings.manifest_dir),
        inserter=Inserter(settings.inserter_dir),
        courier=settings.fulfillment_courier,
        shipment_max_cards=settings.fulfillment_shipment_max_cards,
        actor=NAME,
    )
    runtime = ServiceRuntime(
        name=NAME,
        settings=settings,
        migrations=MIGRATIONS,
        handlers=bind_handlers(HANDLERS, deps),
        subscribe=SUBSCRIBE,
        schema=schema,
        consumer_group=consumer_group,
        repository=partial(FulfillmentRepository, schema=schema or NAME),
        deps=deps,
    )
    if owned is not None:
        runtime.on_stop(owned.aclose)
    return runtime


def build_app(runtime: ServiceRuntime) -> FastAPI:
    return create_app(
        runtime,
        title="cardbureau fulfillment",
        description="Carriers, witnessed destruction of rejects, dispatch after reconciliation.",
        routers=[api.router],
    )
