"""The QA service: wiring (bootstrap) and readiness with the QA reader and machine state."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from services.qa.checker import ChipOracle, QaMachine
from services.qa.feeder_client import FeederClient
from services.qa.handlers import build_handlers
from services.qa.service import Transaction
from services.qa.settings import QaSettings
from shared.keymgmt.client import KeymgmtClient, RetryPolicy
from shared.pcsc import PcscClient, PcscError
from shared.service import ServiceRuntime, create_app

NAME = "qa"
MIGRATIONS = Path(__file__).parent / "migrations"
SUBSCRIBE = ("graphical",)


class QaRuntime(ServiceRuntime):
    machine: QaMachine

    async def check_ready(self) -> dict[str, Any]:
        report = await super().check_ready()
        try:
            known = self.machine.reader in await self.machine.pcsc.list_readers()
        except PcscError as exc:
            known = False
            report["problems"].append(f"pcscd: {exc.__class__.__name__}")
        if not known:
            report["problems"].append(f"QA reader not known to pcscd: {self.machine.reader}")
        report.update(
            reader=self.machine.reader,
            machine=asdict(self.machine.status),
            ready=not report["problems"],
        )
        return report


def bootstrap(
    settings: QaSettings,
    *,
    schema: str | None = None,
    consumer_group: str | None = None,
    reader: str | None = None,
    keymgmt: ChipOracle | None = None,
    pcsc: PcscClient | None = None,
) -> QaRuntime:
    """Wire the QA reader, the feeder and keymgmt into the runtime. Tests pass their own."""
    feeder = FeederClient(settings.feeder_url, timeout_s=settings.feeder_timeout_s)
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
    machine = QaMachine(
        reader=reader or settings.reader_name(),
        pcsc=pcsc or PcscClient(),
        feeder=feeder,
        keymgmt=keymgmt,
        spool_dir=settings.spool_dir,
        transaction=Transaction(
            settings.qa_amount_minor, settings.qa_terminal_country, settings.qa_currency
        ),
        card_timeout_s=settings.qa_card_timeout_s,
        fault_backoff_s=settings.qa_machine_backoff_s,
        queue_poll_s=settings.queue_poll_s,
    )
    runtime = QaRuntime(
        name=NAME,
        settings=settings,
        migrations=MIGRATIONS,
        handlers=build_handlers(machine.notify_queued),
        subscribe=SUBSCRIBE,
        workers=[machine.run],
        schema=schema,
        consumer_group=consumer_group,
    )
    for closer in closers:
        runtime.on_stop(closer.aclose)
    runtime.machine = machine
    runtime.state["machine"] = machine
    return runtime


def build_app(runtime: QaRuntime) -> FastAPI:
    return create_app(
        runtime,
        title="cardbureau qa",
        description="Chip read-back, ARQC and print checks of every printed card.",
    )
