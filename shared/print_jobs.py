"""A print job moved through an IPP printer exactly once: the card printer's spooler
(services/graphical) and the PIN mailer (keymgmt) both drive their jobs through this machine.

    queued -> submitting -> submitted -> printed | spoiled

- `submitting` is durable before the Print-Job request (the store's `start_submission`), so a
  job found `submitting` (the process died, or the answer was lost) may have reached the
  printer: it is first looked up there by its job name (`find_job`), and sent again only when
  the printer has no job of that name. A job is never printed twice, and never lost.
- Printer down (no connection, an answer that cannot be read): the job keeps its status and
  waits, retried with a capped exponential backoff. A Print-Job answered with a server-error
  status created no job: back to `queued` (no lookup needed), retried with the same backoff;
  server-error-busy (the printer is on another job) is no outage: retried in `busy_s`.
- Printer rejects the job (a client-error status): back to `queued`, retried; after
  `max_rejections` rejections it is spoiled with the printer's reason (None: retried forever).
- Job aborted or canceled at the printer: spoiled. A submitted job the printer no longer knows
  (it restarted and lost its history) has an unknown outcome: spoiled, never sent again; so
  is a `submitting` job whose lookup cannot see far enough back in the printer's history.

The machine owns no SQL and no schema: each service keeps its jobs in its own tables behind a
`PrintJobStore`, and decides how replicas share the work (a lease on due jobs, a lock per job).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from shared.ipp import (
    IppBusy,
    IppError,
    IppHistoryTooLong,
    IppRejected,
    IppServerError,
    JobState,
    JobStatus,
)

log = logging.getLogger(__name__)

QUEUED: Final = "queued"
SUBMITTING: Final = "submitting"
SUBMITTED: Final = "submitted"
PRINTED: Final = "printed"
SPOILED: Final = "spoiled"
UNFINISHED: Final = (QUEUED, SUBMITTING, SUBMITTED)
PROBLEM_LIMIT: Final = 500  # characters of a printer's problem a job row keeps


class PrintJobLike(Protocol):
    """What the machine reads of a service's job row."""

    @property
    def job_name(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def ipp_job_id(self) -> int | None: ...
    @property
    def rejections(self) -> int: ...


J = TypeVar("J", bound=PrintJobLike)
J_contra = TypeVar("J_contra", bound=PrintJobLike, contravariant=True)


class JobPrinter(Protocol):
    """The three IPP calls a job needs (shared.ipp.IppClient has them; unit tests fake them)."""

    uri: str

    async def print_job(
        self, document: bytes, *, job_name: str, document_format: str
    ) -> JobStatus: ...

    async def job(self, job_id: int) -> JobStatus: ...

    async def find_job(self, job_name: str) -> JobStatus | None: ...


class PrintJobStore(Protocol[J_contra]):
    """A service's jobs, in its own tables. Each call is durable when it returns."""

    async def start_submission(self, job: J_contra, *, retry_in_s: float) -> bytes:
        """Mark the job `submitting` (one more attempt), durably, and return its document.
        Raise the service's own error when there is no document to send (nothing is sent)."""
        ...

    async def submitted(
        self, job: J_contra, printed: JobStatus, *, location: str, retry_in_s: float
    ) -> None:
        """The printer has the job (`submitted`, its IPP job id and location)."""
        ...

    async def reschedule(
        self, job: J_contra, *, status: str, retry_in_s: float, problem: str | None
    ) -> None:
        """The job keeps `status` and is due again in `retry_in_s`."""
        ...

    async def rejected(
        self, job: J_contra, *, rejections: int, retry_in_s: float, problem: str
    ) -> None:
        """The printer refused the job: back to `queued`, with the count of refusals."""
        ...

    async def finish(self, job: J_contra, printed: JobStatus | None, problem: str | None) -> None:
        """The job's outcome: printed (problem None) or spoiled (the reason), with whatever the
        service records or emits with it, in one transaction."""
        ...


class PrinterWatch(Protocol):
    """Told what the printer did, for the operator's view and metrics."""

    def up(self) -> None: ...
    def down(self, problem: str) -> None: ...
    def count(self, outcome: str) -> None: ...


class _Unwatched:
    def up(self) -> None:
        pass

    def down(self, problem: str) -> None:
        pass

    def count(self, outcome: str) -> None:
        pass


@dataclass(frozen=True)
class PrintPolicy:
    poll_s: float = 0.2  # a submitted job is asked about again after this long
    backoff_s: float = 0.5  # the first wait after the printer did not answer, doubled each time
    backoff_max_s: float = 10.0
    max_rejections: int | None = 3  # None: a rejected job is retried until it is printed
    lease_s: float = 30.0  # a job being submitted is left alone by others this long
    busy_s: float = 0.02  # a printer busy with another job is asked again after this long
    busy_wait_s: float = 5.0  # and for this long, the document in hand, before the job waits


@dataclass(frozen=True)
class Progress:
    """Where one step left the job. `problem`: why it did not move on, or why it is spoiled."""

    status: str
    problem: str | None = None
    ipp_job_id: int | None = None
    printer_down: bool = False
    busy: bool = False  # the printer was on another job: ask again in the policy's busy_s

    @property
    def finished(self) -> bool:
        return self.status in (PRINTED, SPOILED)


class PrintJobMachine:
    """One printer's jobs: `advance` takes one job one step on."""

    def __init__(
        self,
        printer: JobPrinter,
        *,
        document_format: str,
        policy: PrintPolicy | None = None,
        watch: PrinterWatch | None = None,
    ) -> None:
        self.printer = printer
        self.document_format = document_format
        self.policy = policy or PrintPolicy()
        self.watch: PrinterWatch = watch or _Unwatched()
        self._failures = 0
        # One Print-Job at a time from this process: the printer takes one job at a time, so
        # concurrent submitters would only make each other busy (and render again for nothing).
        self._submitting = asyncio.Lock()

    async def advance(self, job: J, store: PrintJobStore[J]) -> Progress:
        """Submit a queued job, recover a `submitting` one, or follow a submitted one."""
        if job.status == SUBMITTED:
            return await self._follow(job, store)
        if job.status == SUBMITTING:
            return await self._recover(job, store)
        if job.status == QUEUED:
            return await self._submit(job, store)
        return Progress(job.status, ipp_job_id=job.ipp_job_id)

    async def advance_until_settled(
        self,
        job: J,
        store: PrintJobStore[J],
        reload: Callable[[], Awaitable[J]],
        *,
        wait_s: float,
        poll_s: float = 0.1,
    ) -> Progress:
        """Step the job on until it is finished, waits for the printer (down or refusing), or
        `wait_s` has passed while the printer works on it (ask again later): for a caller
        that prints while its request waits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            followed = job.status == SUBMITTED
            progress = await self.advance(job, store)
            waiting = progress.status == SUBMITTED or progress.busy
            if not waiting or loop.time() >= deadline:
                return progress
            job = await reload()
            if progress.busy:  # the printer is on another job: ask again in a moment
                await asyncio.sleep(self.policy.busy_s)
            elif followed:  # the printer is still at it: give it a moment
                await asyncio.sleep(poll_s)

    def printer_up(self) -> None:
        """The printer answered (a job call, or the caller's own status request)."""
        self._failures = 0
        self.watch.up()

    def _count(self, outcome: str) -> None:
        self.watch.count(outcome)

    def printer_down(self, problem: str) -> float:
        """The printer did not answer: note it, and the delay before the next try."""
        self._failures += 1
        self.watch.down(problem)
        self._count("unreachable")
        delay = self.policy.backoff_s * 2 ** (self._failures - 1)
        return float(min(delay, self.policy.backoff_max_s))

    async def _recover(self, job: J, store: PrintJobStore[J]) -> Progress:
        """A job that may have reached the printer: adopt the printer's job if it has one."""
        assert job.job_name is not None
        try:
            found = await self.printer.find_job(job.job_name)
        except IppHistoryTooLong as exc:
            self.printer_up()
            return await self._finish(job, store, None, f"outcome unknown: {exc}")
        except IppError as exc:
            return await self._wait_for_printer(job, store, SUBMITTING, str(exc))
        self.printer_up()
        if found is None:
            log.info("job not on the printer; submitting it", extra={"job_name": job.job_name})
            return await self._submit(job, store)
        log.warning(
            "job already on the printer; not sending it again",
            extra={"job_name": job.job_name, "ipp_job_id": found.job_id},
        )
        return await self._record_submitted(job, store, found)

    async def _submit(self, job: J, store: PrintJobStore[J]) -> Progress:
        assert job.job_name is not None
        # Durable BEFORE the request: from here on, a retry looks the job up first.
        document = await store.start_submission(job, retry_in_s=self.policy.lease_s)
        try:
            status = await self.print_when_free(document, job.job_name)
        except IppRejected as exc:
            self.printer_up()
            self._count("rejected")
            return await self._rejected(job, store, str(exc))
        except IppBusy as exc:  # answered, no job made: the printer is on another one
            self.printer_up()
            self._count("busy")
            await store.reschedule(job, status=QUEUED, retry_in_s=self.policy.busy_s, problem=None)
            return Progress(QUEUED, problem=str(exc), busy=True)
        except IppServerError as exc:  # answered, no job made: down, but nothing to look up
            return await self._wait_for_printer(job, store, QUEUED, str(exc))
        except IppError as exc:  # unreachable, or an answer we cannot read: maybe printed
            return await self._wait_for_printer(job, store, SUBMITTING, str(exc))
        finally:
            del document  # the only copy this machine held (a PIN mailer's, for one)
        self.printer_up()
        self._count("submitted")
        return await self._record_submitted(job, store, status)

    async def print_when_free(self, document: bytes, job_name: str) -> JobStatus:
        """Print-Job, asked again in place (the same document) while the printer answers busy,
        for up to the policy's busy_wait_s; then IppBusy."""
        loop = asyncio.get_running_loop()
        async with self._submitting:
            deadline = loop.time() + self.policy.busy_wait_s
            while True:
                try:
                    return await self.printer.print_job(
                        document, job_name=job_name, document_format=self.document_format
                    )
                except IppBusy:
                    if loop.time() >= deadline:
                        raise
                    self._count("busy")
                await asyncio.sleep(self.policy.busy_s)

    async def _record_submitted(
        self, job: J, store: PrintJobStore[J], status: JobStatus
    ) -> Progress:
        location = f"{self.printer.uri}#job-{status.job_id}"
        await store.submitted(job, status, location=location, retry_in_s=self.policy.poll_s / 2)
        return Progress(SUBMITTED, ipp_job_id=status.job_id)

    async def _rejected(self, job: J, store: PrintJobStore[J], problem: str) -> Progress:
        rejections = job.rejections + 1
        limit = self.policy.max_rejections
        if limit is not None and rejections >= limit:
            await store.rejected(
                job, rejections=rejections, retry_in_s=0.0, problem=problem[:PROBLEM_LIMIT]
            )
            reason = f"printer rejected the job {rejections} times: {problem}"
            return await self._finish(job, store, None, reason)
        log.warning(
            "printer rejected the job; will retry",
            extra={"job_name": job.job_name, "problem": problem},
        )
        await store.rejected(
            job,
            rejections=rejections,
            retry_in_s=self.policy.backoff_s * rejections,
            problem=problem[:PROBLEM_LIMIT],
        )
        return Progress(QUEUED, problem=problem)

    async def _wait_for_printer(
        self, job: J, store: PrintJobStore[J], status: str, problem: str
    ) -> Progress:
        delay = self.printer_down(problem)
        log.warning(
            "printer unavailable; job waits",
            extra={"job_name": job.job_name, "problem": problem, "retry_in_s": delay},
        )
        await store.reschedule(
            job, status=status, retry_in_s=delay, problem=problem[:PROBLEM_LIMIT]
        )
        return Progress(status, problem=problem, ipp_job_id=job.ipp_job_id, printer_down=True)

    async def _follow(self, job: J, store: PrintJobStore[J]) -> Progress:
        assert job.ipp_job_id is not None
        try:
            status = await self.printer.job(job.ipp_job_id)
        except IppRejected as exc:
            self.printer_up()
            lost = f"the printer has no record of job {job.ipp_job_id} ({exc}): outcome unknown"
            return await self._finish(job, store, None, lost)
        except IppError as exc:
            return await self._wait_for_printer(job, store, SUBMITTED, str(exc))
        self.printer_up()
        if not status.state.final:
            await store.reschedule(
                job, status=SUBMITTED, retry_in_s=self.policy.poll_s, problem=None
            )
            return Progress(SUBMITTED, ipp_job_id=status.job_id)
        if status.state is JobState.COMPLETED:
            return await self._finish(job, store, status, None)
        reasons = ", ".join(status.reasons) or "no reason given"
        problem = f"printer {status.state.name.lower()} job {status.job_id}: {reasons}"
        return await self._finish(job, store, status, problem)

    async def _finish(
        self, job: J, store: PrintJobStore[J], status: JobStatus | None, problem: str | None
    ) -> Progress:
        await store.finish(job, status, problem)
        outcome = PRINTED if problem is None else SPOILED
        self._count(outcome)
        extra = {"job_name": job.job_name, "ipp_job_id": status.job_id if status else None}
        if problem is None:
            log.info("print job printed", extra=extra)
        else:
            log.warning("print job spoiled at the printer", extra=extra | {"reason": problem})
        return Progress(outcome, problem=problem, ipp_job_id=status.job_id if status else None)
