"""The print spooler: moves each recorded print job through the IPP printer, exactly once.

    queued -> submitting -> submitted -> printed (card.printed) | spoiled (card.spoiled)

- The job and its rendered document are committed before anything is sent; `submitting` is
  committed before the Print-Job request. A job found `submitting` (the process died, or the
  answer was lost) is first looked up on the printer by its job name; it is sent again only
  when the printer has no job of that name. So a card is never printed twice, and never lost:
  its job stays in the table until the printer reports it completed or aborted.
- Printer down (no connection, server-error status): the job waits, retried with a capped
  exponential backoff; the operator sees the printer `unreachable` (GET /v1/printer, metrics).
- Printer rejects the job (client-error status): retried `max_rejections` times, then the card
  is spoiled with the printer's reason (it goes to witnessed destruction, counted by audit).
- Job aborted or canceled at the printer: the card is spoiled. A submitted job the printer no
  longer knows (it restarted and lost its history) has an unknown outcome: spoiled, never
  printed again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.graphical.printer import DOCUMENT_FORMAT, Printer
from services.graphical.repository import GraphicalRepository, PrintJob
from shared.events import CardPrinted, CardSpoiled
from shared.ipp import IppError, IppRejected, JobState, JobStatus
from shared.metrics import PRINT_OUTCOMES, PRINT_WAITING, PRINTER_UP
from shared.outbox import UnitOfWork
from shared.service import ServiceRuntime

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
        self.backoff_max_s = backoff_max_s
        self.max_rejections = max_rejections
        self.lease_s = lease_s
        self.status_every_s = status_every_s
        self.view = PrinterView(printer.name, printer.uri)
        self._failures = 0
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
                log.warning("print spooler step failed", extra={"error": repr(exc)})
                worked = False
                await asyncio.sleep(self.backoff_s)
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
            self._down(str(exc))
        else:
            self._up()
            self.view.state = status.state.name.lower()
            self.view.reasons = status.reasons
            self.view.accepting = status.accepting
        try:
            async with runtime.engine.connect() as conn:
                counts = await GraphicalRepository(conn, runtime.schema).job_counts()
            waiting = sum(counts.get(s, 0) for s in ("queued", "submitting", "submitted"))
            PRINT_WAITING.labels(printer=self.printer.name).set(waiting)
        except Exception as exc:  # metrics only: the next refresh tries again
            log.debug("print job counts unavailable", extra={"error": repr(exc)})

    def _up(self) -> None:
        self._failures = 0
        self.view.last_contact = datetime.now(UTC)
        if self.view.state == "unreachable":
            self.view.state = "unknown"
        PRINTER_UP.labels(printer=self.printer.name).set(1)

    def _down(self, problem: str) -> float:
        """The printer did not answer: note it, and the delay before the next try."""
        self._failures += 1
        self.view.state, self.view.last_problem = "unreachable", problem
        PRINTER_UP.labels(printer=self.printer.name).set(0)
        self._count("unreachable")
        return float(min(self.backoff_s * 2 ** (self._failures - 1), self.backoff_max_s))

    def _count(self, outcome: str) -> None:
        self.view.counts[outcome] = self.view.counts.get(outcome, 0) + 1
        PRINT_OUTCOMES.labels(printer=self.printer.name, outcome=outcome).inc()

    async def step(self, runtime: ServiceRuntime) -> bool:
        """Handle one due job. False when none is due."""
        async with runtime.engine.begin() as conn:
            job = await GraphicalRepository(conn, runtime.schema).claim_due_job(self.lease_s)
        if job is None:
            return False
        if job.status == "submitted":
            await self._follow(runtime, job)
        elif job.status == "submitting":
            await self._recover(runtime, job)
        else:
            await self._submit(runtime, job)
        return True

    async def _recover(self, runtime: ServiceRuntime, job: PrintJob) -> None:
        """A job that may have reached the printer: adopt the printer's job if it has one."""
        assert job.job_name is not None
        try:
            found = await self.printer.find_job(job.job_name)
        except IppError as exc:
            await self._retry_later(runtime, job, "submitting", str(exc))
            return
        self._up()
        if found is None:
            log.info("job not on the printer; submitting it", extra={"card_id": str(job.card_id)})
            await self._submit(runtime, job)
            return
        log.warning(
            "job already on the printer; not sending it again",
            extra={"card_id": str(job.card_id), "ipp_job_id": found.job_id},
        )
        await self._record_submitted(runtime, job, found)

    async def _submit(self, runtime: ServiceRuntime, job: PrintJob) -> None:
        assert job.job_name is not None
        async with runtime.engine.begin() as conn:
            repo = GraphicalRepository(conn, runtime.schema)
            document = await repo.document(job.job_id)
            # Durable BEFORE the request: from here on, a retry looks the job up first.
            await repo.update_job(
                job.job_id, status="submitting", retry_in_s=self.lease_s, attempts=job.attempts + 1
            )
        if document is None:
            raise RuntimeError(f"print job {job.job_id} has no document")  # schema broken
        try:
            status = await self.printer.print_job(
                document, job_name=job.job_name, document_format=DOCUMENT_FORMAT
            )
        except IppRejected as exc:
            self._up()
            self._count("rejected")
            await self._rejected(runtime, job, str(exc))
            return
        except IppError as exc:  # unreachable, or an answer we cannot read: maybe printed
            await self._retry_later(runtime, job, "submitting", str(exc))
            return
        self._up()
        self._count("submitted")
        await self._record_submitted(runtime, job, status)

    async def _record_submitted(
        self, runtime: ServiceRuntime, job: PrintJob, status: JobStatus
    ) -> None:
        async with runtime.engine.begin() as conn:
            await GraphicalRepository(conn, runtime.schema).update_job(
                job.job_id,
                status="submitted",
                retry_in_s=self.poll_s / 2,
                ipp_job_id=status.job_id,
                location=f"{self.printer.uri}#job-{status.job_id}",
            )
        self.wake()

    async def _rejected(self, runtime: ServiceRuntime, job: PrintJob, problem: str) -> None:
        rejections = job.rejections + 1
        if rejections >= self.max_rejections:
            async with runtime.engine.begin() as conn:
                await GraphicalRepository(conn, runtime.schema).update_job(
                    job.job_id, status="queued", problem=problem[:500], rejections=rejections
                )
            await self._finish(
                runtime, job, None, f"printer rejected the job {rejections} times: {problem}"
            )
            return
        log.warning(
            "printer rejected the job; will retry",
            extra={"card_id": str(job.card_id), "problem": problem},
        )
        async with runtime.engine.begin() as conn:
            await GraphicalRepository(conn, runtime.schema).update_job(
                job.job_id,
                status="queued",
                retry_in_s=self.backoff_s * rejections,
                problem=problem[:500],
                rejections=rejections,
            )

    async def _retry_later(
        self, runtime: ServiceRuntime, job: PrintJob, status: str, problem: str
    ) -> None:
        delay = self._down(problem)
        log.warning(
            "printer unavailable; job waits",
            extra={"card_id": str(job.card_id), "problem": problem, "retry_in_s": delay},
        )
        async with runtime.engine.begin() as conn:
            await GraphicalRepository(conn, runtime.schema).update_job(
                job.job_id, status=status, retry_in_s=delay, problem=problem[:500]
            )

    async def _follow(self, runtime: ServiceRuntime, job: PrintJob) -> None:
        assert job.ipp_job_id is not None
        try:
            status = await self.printer.job(job.ipp_job_id)
        except IppRejected as exc:
            self._up()
            await self._finish(
                runtime,
                job,
                None,
                f"the printer has no record of job {job.ipp_job_id} ({exc}): outcome unknown",
            )
            return
        except IppError as exc:
            await self._retry_later(runtime, job, "submitted", str(exc))
            return
        self._up()
        if not status.state.final:
            async with runtime.engine.begin() as conn:
                await GraphicalRepository(conn, runtime.schema).update_job(
                    job.job_id, status="submitted", retry_in_s=self.poll_s
                )
            return
        if status.state is JobState.COMPLETED:
            await self._finish(runtime, job, status, None)
        else:
            reasons = ", ".join(status.reasons) or "no reason given"
            await self._finish(
                runtime,
                job,
                status,
                f"printer {status.state.name.lower()} job {status.job_id}: {reasons}",
            )

    async def _finish(
        self, runtime: ServiceRuntime, job: PrintJob, status: JobStatus | None, problem: str | None
    ) -> None:
        """The card's print outcome and its event, in one transaction."""
        async with runtime.engine.begin() as conn:
            uow = UnitOfWork(conn, runtime.schema, runtime.emit_topic)
            repo = GraphicalRepository(conn, runtime.schema)
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
        runtime.relay.wake()
        outcome = "printed" if problem is None else "spoiled"
        self._count(outcome)
        extra = {"card_id": str(job.card_id), "ipp_job_id": status.job_id if status else None}
        if problem is None:
            log.info("card face printed", extra=extra)
        else:
            log.warning("card spoiled at the printer", extra=extra | {"reason": problem})
