"""A QA position at work: one reader, one printed card at a time, print check then chip checks.
A QA station runs several positions (station.py), each claiming its own cards.

Per card: the printer's output must look like the render card.printed announced
(print_check.py); the feeder puts the card into the QA reader by chip serial; the chip must be
that chip, then run a whole EMV transaction on both interfaces with QA's terminal kernel
(emv_check.py: keymgmt compares the records and verifies the ARQCs in the HSM), or a SIM's
checks (sim_check.py). The verdict and its event commit in one transaction; then the card's face
leaves the printer's spool (print_check.discard_prints), and at start every decided card's.
A fault of the machine (feeder, reader, pcscd) puts the card back in the queue instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from services.qa.emv.kernel import TerminalConfig
from services.qa.emv_check import QaPlace, ca_key_source, emv_chip_checks
from services.qa.emv_check import readback_problems as readback_problems
from services.qa.feeder_client import CardNotFound, Feeder, FeederUnavailable
from services.qa.print_check import discard_prints, print_image_problem, spooled_cards
from services.qa.repository import QaCard, QaRepository
from services.qa.service import (
    CHECK_PRINT_IMAGE,
    GET_CPLC,
    QaFailure,
    Transaction,
    chip_serial_from_cplc,
)
from services.qa.sim_check import is_usim, sim_chip_checks
from shared.events import CardQaFailed, CardQaPassed
from shared.keymgmt.contract import ArqcRequest, CaPublicKey, ReadbackRequest, Verdict
from shared.outage import report_failure, report_recovery
from shared.outbox import UnitOfWork
from shared.pcsc import CardConnection, CardRemoved, PcscClient, PcscError
from shared.service import ServiceRuntime
from shared.telemetry import card_stage, trace_context_of

log = logging.getLogger(__name__)


class ChipOracle(Protocol):
    """keymgmt's checks of a payment chip (shared/keymgmt/client.py). Waits out any outage of
    keymgmt; a 4xx (KeymgmtRefused) or an answer outside the contract (KeymgmtBadResponse) is a
    verdict on the card, which fails its QA."""

    async def readback(self, request: ReadbackRequest) -> Verdict: ...

    async def verify_arqc(self, request: ArqcRequest) -> Verdict: ...

    async def ca_public_key(self, rid: str, ca_index: str) -> CaPublicKey: ...


class MachineFault(Exception):
    """The QA machine, not the card, failed: the card goes back in the queue."""


@dataclass
class QaActivity:
    activity: str = "starting"
    passed: int = 0
    failed: int = 0
    machine_faults: int = 0
    last_problem: str | None = None
    # Where the last card's time went, in ms per phase: print check, feeder insert, the chip
    # answering in the reader, the chip checks, eject until pcscd sees the reader empty.
    last_card_ms: dict[str, int] = field(default_factory=dict)


class QaMachine:
    def __init__(
        self,
        *,
        reader: str,
        pcsc: PcscClient,
        feeder: Feeder,
        keymgmt: ChipOracle,
        spool_dir: Path,
        transaction: Transaction,
        card_timeout_s: float = 5.0,
        fault_backoff_s: float = 1.0,
        queue_poll_s: float = 0.5,
        station: str = "qa-1",
    ) -> None:
        self.reader = reader
        self.station = station  # the QA station keymgmt's read-back is pinned to
        self.pcsc = pcsc
        self.feeder = feeder
        self.keymgmt = keymgmt
        self.spool_dir = spool_dir
        self.transaction = transaction
        self.card_timeout_s = card_timeout_s
        self.fault_backoff_s = fault_backoff_s
        self.queue_poll_s = queue_poll_s
        self.status = QaActivity()
        self._queue_changed = asyncio.Event()
        self._ca_keys = ca_key_source(keymgmt)  # kept across cards (emv_check.py)

    def notify_queued(self) -> None:
        self._queue_changed.set()
        self._queue_changed.clear()

    async def serve(self, runtime: ServiceRuntime) -> None:
        """This position's loop: claim the oldest queued card, check it, record the verdict."""
        while True:
            self.status.activity = "waiting for a printed card"
            try:
                card = await self._claim(runtime)
            except Exception as exc:  # the database away: QA waits for it, logged once
                self.status.last_problem = f"database: {exc.__class__.__name__}"
                if not report_failure(exc):
                    log.warning("cannot claim a card", extra={"error": repr(exc)})
                await asyncio.sleep(self.fault_backoff_s)
                continue
            report_recovery()
            if card is None:
                try:
                    await asyncio.wait_for(self._queue_changed.wait(), self.queue_poll_s)
                except TimeoutError:
                    pass
                continue
            self.status.activity = f"checking card {card.card_id}"
            try:
                checks, failure = await self.check(card)
            except BaseException as exc:
                await self._release(runtime, card.card_id)
                if not isinstance(exc, Exception):
                    raise  # stopped: the card waits in the queue for the next start
                self.status.machine_faults += 1
                self.status.last_problem = f"{exc.__class__.__name__}: {exc}"
                if not isinstance(exc, MachineFault):
                    log.exception(
                        "QA check failed unexpectedly", extra={"card_id": str(card.card_id)}
                    )
                else:
                    log.warning("QA machine fault; card re-queued", extra={"problem": str(exc)})
                await asyncio.sleep(self.fault_backoff_s)
                continue
            if await self._record(runtime, card, checks, failure):
                await self._discard_prints(card.card_id)

    async def sweep_spool(self, runtime: ServiceRuntime) -> None:
        """Delete what the spool still holds of cards already decided (QA stopped between a
        verdict and its deletion)."""
        spooled = list(await asyncio.to_thread(spooled_cards, self.spool_dir))
        decided: set[UUID] = set()
        if spooled:
            async with runtime.unit_of_work() as uow:
                decided = await uow.repo.decided(spooled)
        for card_id in decided:
            await self._discard_prints(card_id)

    async def _discard_prints(self, card_id: UUID) -> None:
        try:
            await asyncio.to_thread(discard_prints, self.spool_dir, card_id)
        except OSError as exc:  # the next start's sweep deletes them
            log.warning(
                "could not delete the card's prints from the spool",
                extra={"card_id": str(card_id), "error": repr(exc)},
            )

    async def _release(self, runtime: ServiceRuntime, card_id: UUID) -> None:
        await self._in_transaction(runtime, lambda _uow, repo: repo.release(card_id))

    async def _claim(self, runtime: ServiceRuntime) -> QaCard | None:
        async with runtime.unit_of_work() as uow:
            card: QaCard | None = await uow.repo.claim_next(self.station, self.reader)
        return card

    async def check(self, card: QaCard) -> tuple[list[str], str | None]:
        """The checks passed and the failure, if any (in the card's trace). Raises MachineFault."""
        with card_stage("qa", trace_context_of(card.traceparent), str(card.card_id)):
            return await self._checks(card)

    def _phase(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.status.last_card_ms[name] = round((now - since) * 1000)
        return now

    async def _checks(self, card: QaCard) -> tuple[list[str], str | None]:
        self.status.last_card_ms = {}
        started = time.perf_counter()
        problem = await asyncio.to_thread(
            print_image_problem, self.spool_dir, card.card_id, card.image_sha256
        )
        self._phase("print", started)
        if problem is not None:
            return [], problem  # a misprinted card is rejected without reading its chip
        try:
            checks = await self._check_chip(card)
        except QaFailure as exc:
            return [], str(exc)
        return [*checks, CHECK_PRINT_IMAGE], None

    async def _check_chip(self, card: QaCard) -> list[str]:
        mark = time.perf_counter()
        try:
            await self.feeder.insert(self.reader, card.chip_serial)
            mark = self._phase("insert", mark)
        except CardNotFound as exc:
            raise QaFailure(f"chip: {exc}") from exc
        except FeederUnavailable as exc:
            raise MachineFault(str(exc)) from exc
        try:
            conn = await self._connect_to(card.chip_serial)
            mark = self._phase("answer", mark)
            try:
                checks = await self._chip_checks(conn, card)
                mark = self._phase("chip", mark)
                return checks
            except CardRemoved as exc:
                raise QaFailure("chip: the card left the QA reader during the checks") from exc
            except PcscError as exc:
                raise MachineFault(f"QA reader: {exc}") from exc
            finally:
                await conn.disconnect("leave")  # the card is ejected next; unpower can hang vpcd
        finally:
            try:
                await self.feeder.eject(self.reader)
            except FeederUnavailable as exc:
                log.warning("could not eject from the QA reader", extra={"problem": str(exc)})
            else:
                # pcscd sees the reader empty only at vpcd's next poll (400 ms); until then the
                # next card inserted would not answer.
                with contextlib.suppress(PcscError):
                    await self.pcsc.wait_for_removal(self.reader, timeout=2.0)
                self._phase("eject", mark)

    async def _connect_to(self, chip_serial: str) -> CardConnection:
        """Connect to the inserted card, and make sure it is that card: right after an eject
        pcscd may still report the previous card for up to one presence poll."""
        deadline = asyncio.get_running_loop().time() + self.card_timeout_s
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise MachineFault(f"chip {chip_serial} did not answer in the QA reader")
            try:
                await self.pcsc.wait_for_card(self.reader, timeout=left)
                conn = await self.pcsc.connect(self.reader)
            except PcscError:
                await asyncio.sleep(0.05)
                continue
            try:
                data, sw = await conn.transmit(GET_CPLC)
                if chip_serial_from_cplc(data, sw) == chip_serial:
                    return conn
            except (PcscError, QaFailure):
                # pcscd may still track the card before this one: a warm reset resyncs it.
                await conn.disconnect("reset")
                await asyncio.sleep(0.05)
                continue
            await conn.disconnect("leave")
            await asyncio.sleep(0.05)

    async def _chip_checks(self, conn: CardConnection, card: QaCard) -> list[str]:
        if await is_usim(conn):  # a SIM product: the USIM's own checks (sim_check.py)
            return await sim_chip_checks(conn, card.card_id, self.keymgmt)
        at = QaPlace(card.card_id, card.chip_serial, self.station)
        return await emv_chip_checks(conn.transmit, at, self.keymgmt, self.terminal())

    def terminal(self) -> TerminalConfig:
        """The kernel's configuration: the CA public keys are the ones keymgmt trusts, asked of
        it by RID and index as the card names them, and kept a minute (emv_check.py)."""
        tx = self.transaction
        country, currency = bytes.fromhex(tx.terminal_country), bytes.fromhex(tx.currency)
        return TerminalConfig({}, tx.amount_minor, country, currency, ca_key_source=self._ca_keys)

    async def _record(
        self, runtime: ServiceRuntime, card: QaCard, checks: list[str], failure: str | None
    ) -> bool:
        """Record the verdict; False when the card was no longer this machine's to decide."""
        recorded = False

        async def verdict(uow: UnitOfWork[Any], repo: QaRepository) -> bool:
            nonlocal recorded
            if failure is None:
                if not await repo.mark_passed(card.card_id, checks):
                    return False
                recorded = True
                await uow.emit(
                    CardQaPassed(
                        issuer_id=card.issuer_id,
                        actor="qa",
                        card_id=card.card_id,
                        batch_id=card.batch_id,
                        chip_serial=card.chip_serial,
                        checks=checks,
                    )
                )
                return True
            if not await repo.mark_failed(card.card_id, checks, failure[:500]):
                return False
            recorded = True
            await uow.emit(
                CardQaFailed(
                    issuer_id=card.issuer_id,
                    actor="qa",
                    card_id=card.card_id,
                    batch_id=card.batch_id,
                    chip_serial=card.chip_serial,
                    reason=failure[:500],
                )
            )
            return True

        with card_stage("qa verdict", trace_context_of(card.traceparent), str(card.card_id)):
            await self._in_transaction(runtime, verdict)
        if failure is None:
            self.status.passed += 1
            log.info(
                "card passed QA",
                extra={"card_id": str(card.card_id), "checks": checks, **self._timing()},
            )
        else:
            self.status.failed += 1
            self.status.last_problem = failure
            log.warning("card failed QA", extra={"card_id": str(card.card_id), "reason": failure})
        return recorded

    def _timing(self) -> dict[str, object]:
        return {"reader": self.reader, "ms": dict(self.status.last_card_ms)}

    async def _in_transaction(
        self,
        runtime: ServiceRuntime,
        work: Callable[[UnitOfWork[Any], QaRepository], Awaitable[object]],
    ) -> None:
        async with runtime.unit_of_work() as uow:
            await work(uow, uow.repo)
