"""The QA service: chip read-back, ARQC and print checks of every printed card."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from services.qa.checker import ChipOracle, QaMachine
from services.qa.handlers import HANDLERS, QaDeps
from services.qa.repository import QaRepository
from services.qa.service import Transaction
from services.qa.settings import QaSettings
from services.qa.station import QaStation
from shared.feeder_client import FeederClient
from shared.handlers import bind_handlers
from shared.kafka_access import subscriptions
from shared.keymgmt.client import KeymgmtClient, RetryPolicy
from shared.pcsc import PcscClient, PcscError
from shared.service import ServiceRuntime, create_app

NAME = "qa"
MIGRATIONS = Path(__file__).parent / "migrations"
SUBSCRIBE = subscriptions("qa")


async def reader_readiness(station: QaStation, report: dict[str, Any]) -> None:
    """Readiness adds the QA readers (known to pcscd or not) and the station's state."""
    try:
        known = set(await station.positions[0].pcsc.list_readers())
    except PcscError as exc:
        known = set()
        report["problems"].append(f"pcscd: {exc.__class__.__name__}")
    for reader in station.readers:
        if reader not in known:
            report["problems"].append(f"QA reader not known to pcscd: {reader}")
    report.update(reader=station.readers[0], readers=station.readers, machine=station.status())


def bootstrap(
    settings: QaSettings,
    *,
    schema: str | None = None,
    consumer_group: str | None = None,
    reader: str | None = None,
    readers: list[str] | None = None,
    keymgmt: ChipOracle | None = None,
    pcsc: PcscClient | None = None,
) -> ServiceRuntime:
    """Wire the QA positions' readers, the feeder and keymgmt into the runtime. Tests pass
    their own (`reader` for a one-position station)."""
    feeder = FeederClient(settings.feeder_url, timeout_s=settings.feeder_timeout_s, refill=False)
    closers: list[Any] = [feeder]
    if keymgmt is None:
        client = KeymgmtClient(
            settings.keymgmt_url,
            settings.token_for(NAME),
            timeout_s=settings.keymgmt_timeout_s,
            policy=RetryPolicy.until_answered(
                settings.keymgmt_backoff_s, settings.keymgmt_backoff_max_s
            ),
        )
        closers.append(client)
        keymgmt = client
    pcsc = pcsc or PcscClient()
    transaction = Transaction(
        settings.qa_amount_minor, settings.qa_terminal_country, settings.qa_currency
    )
    station = QaStation(
        [
            QaMachine(
                reader=name,
                pcsc=pcsc,
                feeder=feeder,
                keymgmt=keymgmt,
                spool_dir=settings.spool_dir,
                transaction=transaction,
                card_timeout_s=settings.qa_card_timeout_s,
                fault_backoff_s=settings.qa_machine_backoff_s,
                queue_poll_s=settings.queue_poll_s,
                station=settings.qa_station,
            )
            for name in readers or ([reader] if reader else settings.reader_names())
        ]
    )
    deps = QaDeps(station=station)
    runtime = ServiceRuntime(
        name=NAME,
        settings=settings,
        migrations=MIGRATIONS,
        handlers=bind_handlers(HANDLERS, deps),
        subscribe=SUBSCRIBE,
        workers=[station.run],
        schema=schema,
        consumer_group=consumer_group,
        repository=partial(QaRepository, schema=schema or NAME),
        deps=deps,
        readiness=[partial(reader_readiness, station)],
    )
    for closer in closers:
        runtime.on_stop(closer.aclose)
    return runtime


def build_app(runtime: ServiceRuntime) -> FastAPI:
    return create_app(
        runtime,
        title="cardbureau qa",
        description="Chip read-back, ARQC and print checks of every printed card.",
    )
