"""The electrical station agent: personalises the chips in one encoding station's readers;
readiness reports the readers it sees and the queue as this station sees it."""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError

from services.electrical.feeder_client import FeederTransport
from services.electrical.handlers import HANDLERS, ElectricalDeps
from services.electrical.ports import ScriptSource, Transport
from services.electrical.repository import StationRepository
from services.electrical.settings import ElectricalSettings
from services.electrical.station import StationAgent
from shared.feeder_client import FeederClient
from shared.handlers import bind_handlers
from shared.kafka_access import subscriptions
from shared.keymgmt.client import KeymgmtClient, RetryPolicy
from shared.pcsc import PcscClient, PcscError
from shared.service import ServiceRuntime, create_app

NAME = "electrical"
MIGRATIONS = Path(__file__).parent / "migrations"
SUBSCRIBE = subscriptions("electrical")  # card.prepared, batch.assigned; card.cancelled


async def reader_readiness(agent: StationAgent, report: dict[str, Any]) -> None:
    """Readiness adds the station's readers, each known to pcscd or not."""
    try:
        seen = set(await agent.pcsc.list_readers())
    except PcscError as exc:
        seen = set()
        report["problems"].append(f"pcscd: {exc.__class__.__name__}")
    readers = []
    for name, activity in agent.activity.items():
        readers.append({**asdict(activity), "known_to_pcscd": name in seen})
        if name not in seen:
            report["problems"].append(f"reader not known to pcscd: {name}")
    report.update(station_id=agent.station_id, readers=readers, readers_seen=sorted(seen))


async def queue_readiness(runtime: ServiceRuntime, station_id: str, report: dict[str, Any]) -> None:
    """Readiness adds the queue: cards this station may claim beside those waiting for other
    stations, in a parked batch or for the planner (queued, never spoiled; issue 15). Cards
    waiting elsewhere do not make the station unready. With the database away the queue is
    unknown (null); the database problem is already reported."""
    try:
        async with runtime.engine.connect() as db:
            queue = await StationRepository(db, runtime.schema).queue_for(station_id)
    except (SQLAlchemyError, OSError):
        report["queue"] = None
        return
    report["queue"] = {**asdict(queue), "waiting_elsewhere": queue.waiting_elsewhere}


def bootstrap(
    settings: ElectricalSettings,
    *,
    schema: str | None = None,
    consumer_group: str | None = None,
    readers: list[str] | None = None,
    keymgmt: ScriptSource | None = None,
    transport: Transport | None = None,
    pcsc: PcscClient | None = None,
) -> ServiceRuntime:
    """Wire readers, keymgmt and the feeder into the runtime. Tests pass their own parts."""
    closers: list[Any] = []
    if keymgmt is None:
        client = KeymgmtClient(
            settings.keymgmt_url,
            settings.station_token,
            timeout_s=settings.keymgmt_timeout_s,
            policy=RetryPolicy.until_answered(
                settings.keymgmt_backoff_s, settings.keymgmt_backoff_max_s
            ),
        )
        closers.append(client)
        keymgmt = client
    if transport is None:
        feeder = FeederClient(settings.feeder_url, timeout_s=settings.feeder_timeout_s)
        closers.append(feeder)
        transport = FeederTransport(feeder)
    agent = StationAgent(
        station_id=settings.station_id,
        readers=readers if readers is not None else settings.reader_names(),
        pcsc=pcsc or PcscClient(),
        keymgmt=keymgmt,
        transport=transport,
        queue_poll_s=settings.queue_poll_s,
    )
    deps = ElectricalDeps(agent=agent)
    runtime = ServiceRuntime(
        name=NAME,
        settings=settings,
        migrations=MIGRATIONS,
        handlers=bind_handlers(HANDLERS, deps),
        subscribe=SUBSCRIBE,
        workers=agent.workers(),
        schema=schema,
        consumer_group=consumer_group,
        repository=partial(StationRepository, schema=schema or NAME),
        deps=deps,
        readiness=[partial(reader_readiness, agent)],
    )
    runtime.readiness_checks.append(partial(queue_readiness, runtime, settings.station_id))
    for closer in closers:
        runtime.on_stop(closer.aclose)
    return runtime


def build_app(runtime: ServiceRuntime) -> FastAPI:
    return create_app(
        runtime,
        title="cardbureau electrical",
        description="Station agent: personalises the chips in one encoding station's readers.",
    )
