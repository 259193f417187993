"""The audit service: the append-only, hash-chained event log, zero-loss batch reconciliation
and the auditor API."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from fastapi import FastAPI

from services.audit import api, control_api, export_api, page, security_api, tree_api
from services.audit.checkpointer import keep_merkle_tree
from services.audit.deps import AuditDeps
from services.audit.handlers import HANDLERS
from services.audit.settings import AuditSettings
from services.audit.signer import KeymgmtSigner
from services.audit.store import AuditStore
from services.audit.sweep import sweep_stale_batches
from services.audit.witness_client import WitnessClient
from shared.handlers import bind_handlers
from shared.kafka_access import subscriptions
from shared.keymgmt.client import KeymgmtClient, RetryPolicy
from shared.service import ServiceRuntime, create_app

NAME = "audit"
MIGRATIONS = Path(__file__).parent / "migrations"
# Every service's stream. Not the DLQ: its records are undecodable by definition, and the
# dead_letter.recorded events that count them arrive on the services' own streams.
SUBSCRIBE = subscriptions("audit")


def bootstrap(
    settings: AuditSettings,
    *,
    schema: str | None = None,
    consumer_group: str | None = None,
    signer: KeymgmtSigner | None = None,
    witness: WitnessClient | None = None,
) -> ServiceRuntime:
    """Wire the audit runtime. Tests pass their own schema, consumer group, signer and
    witness."""
    keymgmt: KeymgmtClient | None = None
    if signer is None:
        keymgmt = KeymgmtClient(
            settings.keymgmt_url,
            settings.token_for("audit"),
            timeout_s=10.0,
            policy=RetryPolicy.once(),
        )
        signer = KeymgmtSigner(keymgmt)
    if witness is None and settings.witness_url:
        witness = WitnessClient(settings.witness_url, settings.witness_vkey)
    deps = AuditDeps(settings=settings, signer=signer, witness=witness)
    runtime = ServiceRuntime(
        name=NAME,
        settings=settings,
        migrations=MIGRATIONS,
        handlers=bind_handlers(HANDLERS, deps),
        subscribe=SUBSCRIBE,
        workers=[sweep_stale_batches, keep_merkle_tree],
        schema=schema,
        consumer_group=consumer_group,
        repository=partial(AuditStore, schema=schema or NAME),
        deps=deps,
    )
    if keymgmt is not None:
        runtime.on_stop(keymgmt.aclose)
    if witness is not None:
        runtime.on_stop(witness.aclose)
    return runtime


def build_app(runtime: ServiceRuntime) -> FastAPI:
    return create_app(
        runtime,
        title="cardbureau audit",
        description="Append-only, hash-chained event log; zero-loss batch reconciliation.",
        routers=[
            api.router,
            tree_api.router,
            export_api.router,
            security_api.router,
            control_api.router,
            page.router,
        ],
    )
