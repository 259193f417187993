"""A fake IPP printer for unit tests of the shared print-job machine and its stores
(graphical's card printer, keymgmt's PIN mailers)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.ipp import (
    IppBusy,
    IppHistoryTooLong,
    IppRejected,
    IppServerError,
    IppUnavailable,
    JobState,
    JobStatus,
)


@dataclass
class FakePrinter:
    """A printer that keeps its jobs by name; `down`, `rejects`, `loses_answer`, `busy_for`
    (that many Print-Jobs answered busy), `server_error` and `forgets_far_back` misbehave."""

    uri: str = "ipp://fake/ipp/print"
    jobs: dict[int, tuple[str, JobState]] = field(default_factory=dict)
    down: bool = False
    rejects: bool = False
    loses_answer: bool = False
    finish_as: JobState = JobState.COMPLETED
    polls_until_done: int = 0
    busy_for: int = 0
    server_error: bool = False
    forgets_far_back: bool = False
    sent: list[str] = field(default_factory=list)
    busy_answers: int = 0

    def _check(self) -> None:
        if self.down:
            raise IppUnavailable("printer unreachable: ConnectError")

    async def print_job(self, document: bytes, *, job_name: str, document_format: str) -> JobStatus:
        self._check()
        if self.rejects:
            raise IppRejected(0x040A, "document-format-not-supported")
        if self.busy_for > 0:
            self.busy_for -= 1
            self.busy_answers += 1
            raise IppBusy(0x0507, "printer answered status 0x0507 (busy)")
        if self.server_error:
            raise IppServerError(0x0506, "printer answered status 0x0506")
        job_id = len(self.jobs) + 1
        self.jobs[job_id] = (job_name, JobState.PENDING)
        self.sent.append(job_name)
        if self.loses_answer:
            raise IppUnavailable("printer answered HTTP 502")
        return JobStatus(job_id, JobState.PENDING, name=job_name)

    async def job(self, job_id: int) -> JobStatus:
        self._check()
        if job_id not in self.jobs:
            raise IppRejected(0x0406, "client-error-not-found")
        name, _ = self.jobs[job_id]
        if self.polls_until_done > 0:
            self.polls_until_done -= 1
            return JobStatus(job_id, JobState.PROCESSING, name=name)
        reasons = () if self.finish_as is JobState.COMPLETED else ("media-jam",)
        return JobStatus(job_id, self.finish_as, reasons, name=name)

    async def find_job(self, job_name: str) -> JobStatus | None:
        self._check()
        if self.forgets_far_back:
            raise IppHistoryTooLong("printer keeps over 1024 jobs newer than any named it")
        ids = [i for i, (name, _) in self.jobs.items() if name == job_name]
        return JobStatus(max(ids), JobState.PENDING, name=job_name) if ids else None
