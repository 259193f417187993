"""The long-running loops of QA (claim), graphical (print spooler), audit (merkle keeper) and
electrical (station readers) log one line when a dependency goes down and one when it is back,
never a line per retry (shared/outage.py report_failure / report_recovery); a raw socket error
of the database's client is named "database" (shared/outage.py dependency_of)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.audit import checkpointer
from services.electrical.station import StationAgent
from services.graphical.printing import PrintSpooler
from services.qa.checker import QaMachine
from services.qa.service import Transaction
from services.qa.station import QaStation
from shared import outage
from shared.ipp import IppError
from shared.pcsc import PcscUnavailable

RETRIES = 40


def db_down() -> Exception:
    return sa_exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connect refused"))


@pytest.fixture(autouse=True)
def all_up() -> Iterator[None]:
    """Every process-wide dependency up before and after (they outlive a test)."""
    outage.report_recovery(outage.DATABASE, outage.KAFKA, outage.named("pcscd"))
    yield
    outage.report_recovery(outage.DATABASE, outage.KAFKA, outage.named("pcscd"))


@dataclass
class FlakyRuntime:
    """A runtime whose database refuses the first `failures` transactions; `served` counts the
    ones that went through."""

    failures: int
    repo: Any = None
    served: int = 0
    deps: Any = None
    engine: Any = None
    schema: str = "test"
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[Any]:
        if self.failures > 0:
            self.failures -= 1
            raise db_down()
        self.served += 1
        if self.served >= 3:
            self.done.set()
        yield SimpleNamespace(repo=self.repo)


async def run_until(loop: Callable[[], Any], done: asyncio.Event) -> None:
    task = asyncio.ensure_future(loop())
    try:
        async with asyncio.timeout(10):
            await done.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]


def assert_one_down_one_back(seen: list[str], name: str, retries: int) -> None:
    assert len(seen) == 2, seen
    assert seen[0] == f"{name} is down; retrying quietly until it is back"
    assert seen[1].startswith(f"{name} is back after ")
    assert seen[1].endswith(f" and {retries} retries")


async def test_the_qa_claim_loop_logs_a_database_outage_once_and_its_end_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    repo = SimpleNamespace(release_all_checking=_nothing, claim_next=_nothing)
    runtime = FlakyRuntime(failures=0, repo=repo)
    station = QaStation(
        [
            QaMachine(
                reader="QA reader",
                pcsc=cast(Any, None),
                feeder=cast(Any, None),
                keymgmt=cast(Any, None),
                spool_dir=Path("/nonexistent"),
                transaction=cast(Transaction, None),
                fault_backoff_s=0,
                queue_poll_s=0.001,
            )
        ]
    )

    async def release_then_fail(*_args: Any) -> None:
        runtime.failures = RETRIES  # the database goes away after the start-up release

    repo.release_all_checking = release_then_fail
    with caplog.at_level(logging.INFO):
        await run_until(lambda: station.run(cast(Any, runtime)), runtime.done)
    assert_one_down_one_back(lines(caplog), "database", RETRIES - 1)


async def _nothing(*_args: Any) -> None:
    return None


class DownPrinter:
    name = "card-printer"
    uri = "ipp://127.0.0.1:1/printers/cards"

    async def printer(self) -> Any:
        raise IppError("printer off")


async def test_the_print_spooler_logs_a_database_outage_once_and_its_end_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = FlakyRuntime(failures=RETRIES, repo=SimpleNamespace(claim_due_job=_nothing))
    spooler = PrintSpooler(cast(Any, DownPrinter()), poll_s=0.001, backoff_s=0)
    spooler.status_every_s = 1e9  # the printer's status: once, not under test
    with caplog.at_level(logging.INFO):
        await run_until(lambda: spooler.run(cast(Any, runtime)), runtime.done)
    seen = [line for line in lines(caplog) if "printer" not in line.lower()]
    assert_one_down_one_back(seen, "database", RETRIES - 1)


async def test_the_merkle_keeper_logs_a_database_outage_once_and_its_end_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = asyncio.Event()
    rounds = 0

    async def build_tree(_engine: Any, _schema: str) -> None:
        nonlocal rounds
        rounds += 1
        if rounds <= RETRIES:
            raise db_down()
        if rounds >= RETRIES + 3:
            done.set()

    monkeypatch.setattr(checkpointer, "build_tree", build_tree)
    settings = SimpleNamespace(tree_interval_seconds=0, checkpoint_interval_seconds=0)
    runtime = SimpleNamespace(deps=SimpleNamespace(settings=settings, signer=None, witness=None))
    runtime.engine, runtime.schema = None, "audit"
    with caplog.at_level(logging.INFO):
        await run_until(lambda: checkpointer.keep_merkle_tree(cast(Any, runtime)), done)
    assert_one_down_one_back(lines(caplog), "database", RETRIES - 1)


async def test_a_station_reader_logs_pcscd_and_database_outages_once_each_way(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pcscd restarting, a card served, the database away, a card served: four lines."""
    agent = StationAgent(
        station_id="s1",
        readers=["Reader 0"],
        pcsc=cast(Any, None),
        keymgmt=cast(Any, None),
        transport=cast(Any, None),
    )
    agent._recovered = True
    failures: list[Exception | None] = [
        *(PcscUnavailable("pcscd restarting") for _ in range(RETRIES)),
        None,
        *(db_down() for _ in range(RETRIES)),
        None,
    ]
    done = asyncio.Event()

    async def serve_chip(*_args: Any) -> None:
        if not failures:
            done.set()
            await asyncio.Event().wait()
        failure = failures.pop(0)
        if failure is not None:
            raise failure

    real_sleep = asyncio.sleep

    async def no_wait(_delay: float) -> None:
        await real_sleep(0)

    monkeypatch.setattr(agent, "_serve_chip", serve_chip)
    monkeypatch.setattr("services.electrical.station.asyncio.sleep", no_wait)
    with caplog.at_level(logging.INFO):
        await run_until(lambda: agent.run_reader(cast(Any, None), "Reader 0"), done)
    seen = lines(caplog)
    assert len(seen) == 4, seen
    assert_one_down_one_back(seen[:2], "pcscd", RETRIES - 1)
    assert_one_down_one_back(seen[2:], "database", RETRIES - 1)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_refused_asyncpg_connect_is_the_database_not_the_network() -> None:
    """asyncpg and SQLAlchemy let ConnectionRefusedError out raw; where it was raised names it."""
    port = _closed_port()
    with pytest.raises(ConnectionRefusedError) as raw:
        await asyncpg.connect(host="127.0.0.1", port=port, user="x", database="x", timeout=5)
    assert outage.dependency_of(raw.value) == "database"
    engine = create_async_engine(f"postgresql+asyncpg://x:y@127.0.0.1:{port}/x")
    try:
        with pytest.raises(ConnectionRefusedError) as pooled:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert outage.dependency_of(pooled.value) == "database"
    # The same error raised anywhere else (an HTTP client, a socket of our own) is the network.
    assert outage.dependency_of(ConnectionRefusedError(111, "refused")) == "network"
    with pytest.raises(ConnectionRefusedError) as ours:
        socket.create_connection(("127.0.0.1", port), timeout=5)
    assert outage.dependency_of(ours.value) == "network"


async def test_a_database_outage_met_in_one_loop_ends_with_a_report_recovery_of_another(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="shared.outage"):
        for _retry in range(5):
            assert outage.report_failure(db_down())
        outage.report_recovery()
        outage.report_recovery()
    assert_one_down_one_back(lines(caplog), "database", 4)
