"""The graphical service: card faces rendered from issuer designs, printed on an IPP printer."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from fastapi import FastAPI

from services.graphical import api
from services.graphical.deps import GraphicalDeps, PrintDataSource
from services.graphical.handlers import HANDLERS
from services.graphical.printer import IppPrinter, Printer
from services.graphical.printing import PrintSpooler
from services.graphical.render import FaceRenderer
from services.graphical.repository import GraphicalRepository
from services.graphical.settings import GraphicalSettings
from shared.handlers import bind_handlers
from shared.kafka_access import subscriptions
from shared.keymgmt.client import KeymgmtClient, RetryPolicy
from shared.service import ServiceRuntime, create_app

NAME = "graphical"
MIGRATIONS = Path(__file__).parent / "migrations"
SUBSCRIBE = subscriptions("graphical")


def bootstrap(
    settings: GraphicalSettings,
    *,
    schema: str | None = None,
    consumer_group: str | None = None,
    keymgmt: PrintDataSource | None = None,
    printer: Printer | None = None,
) -> ServiceRuntime:
    """Wire keymgmt, renderer, printer and print spooler. Tests pass their own schema."""
    owned: KeymgmtClient | None = None
    if keymgmt is None:
        client = KeymgmtClient(
            settings.keymgmt_url,
            settings.token_for(NAME),
            timeout_s=settings.keymgmt_timeout_s,
            policy=RetryPolicy(max_attempts=settings.keymgmt_attempts),
        )
        keymgmt = owned = client
    owned_printer = printer is None
    printer = printer or IppPrinter(
        settings.graphical_printer,
        settings.card_printer_uri,
        timeout_s=settings.printer_timeout_s,
        ca_file=settings.card_printer_ca,
    )
    spooler = PrintSpooler(
        printer,
        actor=NAME,
        poll_s=settings.print_poll_s,
        backoff_s=settings.print_backoff_s,
        backoff_max_s=settings.print_backoff_max_s,
        max_rejections=settings.print_max_rejections,
    )
    deps = GraphicalDeps(
        keymgmt=keymgmt,
        renderer=FaceRenderer(settings.graphical_font),
        spooler=spooler,
        printer_name=printer.name,
        actor=NAME,
    )
    runtime = ServiceRuntime(
        name=NAME,
        settings=settings,
        migrations=MIGRATIONS,
        handlers=bind_handlers(HANDLERS, deps),
        subscribe=SUBSCRIBE,
        workers=[spooler.run],
        schema=schema,
        consumer_group=consumer_group,
        repository=partial(GraphicalRepository, schema=schema or NAME),
        deps=deps,
    )
    if owned is not None:
        runtime.on_stop(owned.aclose)
    if owned_printer:
        runtime.on_stop(printer.aclose)
    return runtime


def build_app(runtime: ServiceRuntime) -> FastAPI:
    return create_app(
        runtime,
        title="cardbureau graphical",
        description="Card faces from issuer designs, printed on an IPP printer.",
        routers=[api.router],
    )
