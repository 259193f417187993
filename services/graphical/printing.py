"""The print spooler: moves each recorded print job through the IPP printer, exactly once.

    queued -> submitting -> submitted -> printed (card.printed) | spoiled (card.spoiled)

The job and its rendered document are committed (handlers.py) before anything is sent; the
exactly-once state machine itself (look a maybe-sent job up by name, backoff while the printer
is down, rejections, aborted jobs) is shared/print_jobs.py. Here: the spooler loop that leases
due jobs to this replica (`claim_due_job`, so replicas share the printer), the job store over
graphical's own tables, with card.printed / card.spoiled emitted in the outcome's transaction,
and what the operator sees (`unreachable` at GET /v1/printer, metrics). A spoiled card goes to
witnessed destruction, counted by audit.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.graphical.printer import Printer
from services.graphical.render import FACE_FORMAT
from services.graphical.repository import GraphicalRepository, PrintJob
from shared.events import CardPrinted, CardSpoiled
from shared.ipp import IppError, JobStatus
from shared.metrics import PRINT_OUTCOMES, PRINT_WAITING, PRINTER_UP
from shared.outage import report_failure, report_recovery
from shared.print_jobs import SUBMITTED, UNFINISHED, PrintJobMachine, PrintPolicy
from shared.service import ServiceRuntime
from shared.telemetry import card_stage, trace_context_of

log = logging.getLogger(__name__)


@dataclass
class PrinterView:
    """What the operator sees of the printer (GET /v1/printer)."""

    printer: str
    uri: str
    state: str = "unknown"  # idle | processing | stopped | unreachable
    reasons: tuple[str, ...] = ()
    accepting: bool | None = None
    last_problem: str | None = None
    last_contact: datetime | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "printer": self.printer,
            "uri": self.uri,
            "state": self.state,
            "reasons": list(self.reasons),
            "accepting_jobs": self.accepting,
            "last_problem": self.last_problem,
            "last_contact": self.last_contact.isoformat() if self.last_contact else None,
            "session_counts": dict(self.counts),
        }


class PrintSpooler:
    def __init__(
        self,
        printer: Printer,
        *,
        actor: str = "graphical",
        poll_s: float = 0.2,
        backoff_s: float = 0.5,
        backoff_max_s: float = 10.0,
        max_rejections: int = 3,
        lease_s: float = 30.0,
        status_every_s: float = 5.0,
    ) -> None:
        self.printer = printer
        self.actor = actor
        self.poll_s = poll_s
        self.backoff_s = backoff_s
        self.lease_s = lease_s
        self.status_every_s = status_every_s
        self.view = PrinterView(printer.name, printer.uri)
        policy = PrintPolicy(poll_s, backoff_s, backoff_max_s, max_rejections, lease_s)
        self.machine = PrintJobMachine(
            printer, document_format=FACE_FORMAT, policy=policy, watch=self
        )
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self, runtime: ServiceRuntime) -> None:
        last_status = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                worked = await self.step(runtime)
            except Exception as exc:  # the database away: wait for it, the jobs are safe
                if not report_failure(exc):  # an outage is logged once, when it starts
                    log.warning("print spooler step failed", extra={"error": repr(exc)})
                worked = False
                await asyncio.sleep(self.backoff_s)
            else:
                report_recovery()
            if worked:
                continue
            if loop.time() - last_status >= self.status_every_s:
                last_status = loop.time()
                await self.refresh_status(runtime)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            except TimeoutError:
                pass

    async def refresh_status(self, runtime: ServiceRuntime) -> None:
        try:
            status = await self.printer.printer()
        except IppError as exc:
            self.machine.printer_down(str(exc))
        else:
            self.machine.printer_up()
            self.view.state = status.state.name.lower()
            self.view.reasons = status.reasons
            self.view.accepting = status.accepting
        try:
            async with runtime.unit_of_work() as uow:
                counts = await uow.repo.job_counts()
            waiting = sum(counts.get(s, 0) for s in UNFINISHED)
            PRINT_WAITING.labels(printer=self.printer.name).set(waiting)
        except Exception as exc:  # metrics only: the next refresh tries again
            log.debug("print job counts unavailable", extra={"error": repr(exc)})

    # -- PrinterWatch: what the machine tells the operator's view and the metrics -------------
    def up(self) -> None:
        self.view.last_contact = datetime.now(UTC)
        if self.view.state == "unreachable":
            self.view.state = "unknown"
        PRINTER_UP.labels(printer=self.printer.name).set(1)

    def down(self, problem: str) -> None:
        self.view.state, self.view.last_problem = "unreachable", problem
        PRINTER_UP.labels(printer=self.printer.name).set(0)

    def count(self, outcome: str) -> None:
        self.view.counts[outcome] = self.view.counts.get(outcome, 0) + 1
        PRINT_OUTCOMES.labels(printer=self.printer.name, outcome=outcome).inc()

    async def step(self, runtime: ServiceRuntime) -> bool:
        """Handle one due job. False when none is due."""
        async with runtime.unit_of_work() as uow:
            job = await uow.repo.claim_due_job(self.lease_s)
        if job is None:
            return False
        progress = await self.machine.advance(job, CardPrintJobs(runtime, self.actor))
        if progress.status == SUBMITTED and job.status != SUBMITTED:
            self.wake()  # just handed to the printer: follow it soon
        return True


class CardPrintJobs:
    """graphical's print jobs as the shared machine's store: one transaction per call."""

    def __init__(self, runtime: ServiceRuntime, actor: str) -> None:
        self.runtime = runtime
        self.actor = actor

    async def _update(self, job: PrintJob, **changes: Any) -> None:
        async with self.runtime.unit_of_work() as uow:
            await uow.repo.update_job(job.job_id, **changes)

    async def start_submission(self, job: PrintJob, *, retry_in_s: float) -> bytes:
        async with self.runtime.unit_of_work() as uow:
            repo: GraphicalRepository = uow.repo
            document = await repo.document(job.job_id)
            await repo.update_job(
                job.job_id, status="submitting", retry_in_s=retry_in_s, attempts=job.attempts + 1
            )
        if document is None:
            raise RuntimeError(f"print job {job.job_id} has no document")  # schema broken
        return document

    async def submitted(
        self, job: PrintJob, printed: JobStatus, *, location: str, retry_in_s: float
    ) -> None:
        await self._update(
            job,
            status="submitted",
            retry_in_s=retry_in_s,
            ipp_job_id=printed.job_id,
            location=location,
        )

    async def reschedule(
        self, job: PrintJob, *, status: str, retry_in_s: float, problem: str | None
    ) -> None:
        await self._update(job, status=status, retry_in_s=retry_in_s, problem=problem)

    async def rejected(
        self, job: PrintJob, *, rejections: int, retry_in_s: float, problem: str
    ) -> None:
        await self._update(
            job, status="queued", retry_in_s=retry_in_s, problem=problem, rejections=rejections
        )

    async def finish(self, job: PrintJob, printed: JobStatus | None, problem: str | None) -> None:
        """The card's print outcome and its event, in one transaction (in the card's trace)."""
        with card_stage("print", trace_context_of(job.traceparent), str(job.card_id)):
            await self._finish(job, problem)

    async def _finish(self, job: PrintJob, problem: str | None) -> None:
        async with self.runtime.unit_of_work() as uow:
            repo: GraphicalRepository = uow.repo
            await repo.purge_photo(job.card_id)  # its face is printed (or spoiled): not needed
            await repo.drop_document(job.job_id)  # the face is on the card (or spoiled)
            if problem is None:
                assert job.image_sha256 is not None
                await repo.update_job(job.job_id, status="printed")
                await uow.emit(
                    CardPrinted(
                        issuer_id=job.issuer_id,
                        actor=self.actor,
                        card_id=job.card_id,
                        batch_id=job.batch_id,
                        chip_serial=job.chip_serial,
                        printer=job.printer,
                        image_sha256=job.image_sha256,
                    )
                )
            else:
                await repo.update_job(
                    job.job_id, status="spoiled", reason=problem[:500], problem=problem[:500]
                )
                await uow.emit(
                    CardSpoiled(
                        issuer_id=job.issuer_id,
                        actor=self.actor,
                        card_id=job.card_id,
                        batch_id=job.batch_id,
                        stage="graphical",
                        reason=problem[:500],
                        chip_serial=job.chip_serial,
                    )
                )
