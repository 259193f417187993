"""The shared print-job machine (shared/print_jobs.py) against a fake printer and an in-memory
job store: sent once, looked up by name when the answer was lost, backoff while the printer is
down, rejections, aborted and forgotten jobs. The real printer and the real tables are met in
tests/integration/test_graphical_printing.py and test_graphical_printer_faults.py."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from shared.ipp import JobState, JobStatus
from shared.print_jobs import PrintJobMachine, PrintPolicy, Progress
from tests.support.print_jobs import FakePrinter


@dataclass(frozen=True)
class Job:
    job_name: str | None = "card-1"
    status: str = "queued"
    ipp_job_id: int | None = None
    rejections: int = 0
    attempts: int = 0
    problem: str | None = None
    retry_in_s: float = 0.0


@dataclass
class Store:
    """An in-memory PrintJobStore: the job as it stands, and every write in order."""

    job: Job = field(default_factory=Job)
    writes: list[str] = field(default_factory=list)
    outcome: tuple[JobStatus | None, str | None] | None = None

    async def start_submission(self, job: Job, *, retry_in_s: float) -> bytes:
        self.job = replace(
            self.job, status="submitting", attempts=job.attempts + 1, retry_in_s=retry_in_s
        )
        self.writes.append("submitting")
        return b"%PNG face"

    async def submitted(
        self, job: Job, printed: JobStatus, *, location: str, retry_in_s: float
    ) -> None:
        self.job = replace(
            self.job, status="submitted", ipp_job_id=printed.job_id, retry_in_s=retry_in_s
        )
        self.writes.append(f"submitted {location}")

    async def reschedule(
        self, job: Job, *, status: str, retry_in_s: float, problem: str | None
    ) -> None:
        self.job = replace(self.job, status=status, retry_in_s=retry_in_s, problem=problem)
        self.writes.append(f"{status} in {retry_in_s}")

    async def rejected(self, job: Job, *, rejections: int, retry_in_s: float, problem: str) -> None:
        self.job = replace(
            self.job, status="queued", rejections=rejections, retry_in_s=retry_in_s, problem=problem
        )
        self.writes.append(f"rejected {rejections}")

    async def finish(self, job: Job, printed: JobStatus | None, problem: str | None) -> None:
        self.job = replace(self.job, status="printed" if problem is None else "spoiled")
        self.outcome = (printed, problem)
        self.writes.append(self.job.status)

    async def reload(self) -> Job:
        return self.job


@dataclass
class Watch:
    seen: list[str] = field(default_factory=list)

    def up(self) -> None:
        self.seen.append("up")

    def down(self, problem: str) -> None:
        self.seen.append("down")

    def count(self, outcome: str) -> None:
        self.seen.append(outcome)


POLICY = PrintPolicy(poll_s=0.2, backoff_s=0.5, backoff_max_s=2.0, max_rejections=3, lease_s=30)


def machine(printer: FakePrinter, policy: PrintPolicy = POLICY) -> PrintJobMachine:
    return PrintJobMachine(printer, document_format="image/png", policy=policy, watch=Watch())


async def test_a_job_is_submitted_durably_first_then_followed_to_printed() -> None:
    printer, store = FakePrinter(polls_until_done=1), Store()
    jobs = machine(printer)
    assert await jobs.advance(store.job, store) == Progress("submitted", ipp_job_id=1)
    assert store.writes == ["submitting", "submitted ipp://fake/ipp/print#job-1"]
    assert store.job.retry_in_s == pytest.approx(0.1)  # followed soon: half a poll
    assert (await jobs.advance(store.job, store)).status == "submitted"  # still printing
    assert store.writes[-1] == "submitted in 0.2"
    done = await jobs.advance(store.job, store)
    assert (done.status, done.finished, store.outcome) == ("printed", True, (done_status(1), None))
    assert printer.sent == ["card-1"]


def done_status(job_id: int) -> JobStatus:
    return JobStatus(job_id, JobState.COMPLETED, name="card-1")


async def test_a_job_whose_answer_was_lost_is_found_by_name_never_sent_twice() -> None:
    printer, store = FakePrinter(loses_answer=True), Store()
    jobs = machine(printer)
    lost = await jobs.advance(store.job, store)
    assert (lost.status, lost.printer_down) == ("submitting", True)
    printer.loses_answer = False
    assert (await jobs.advance(store.job, store)).status == "submitted"  # adopted, not re-sent
    assert (await jobs.advance(store.job, store)).status == "printed"
    assert printer.sent == ["card-1"]
    assert store.job.attempts == 1


async def test_a_busy_printer_is_asked_again_in_place_with_the_same_document() -> None:
    printer, store = FakePrinter(busy_for=3), Store()
    policy = replace(POLICY, busy_s=0.001, busy_wait_s=5.0)
    progress = await machine(printer, policy).advance(store.job, store)
    assert progress == Progress("submitted", ipp_job_id=1)
    assert (printer.busy_answers, printer.sent, store.job.attempts) == (3, ["card-1"], 1)
    assert store.writes[0] == "submitting"  # rendered once, not once per busy answer


async def test_a_printer_busy_past_the_wait_leaves_the_job_queued_without_a_lookup() -> None:
    printer, store = FakePrinter(busy_for=1000), Store()
    policy = replace(POLICY, busy_s=0.001, busy_wait_s=0.01)
    jobs = machine(printer, policy)
    progress = await jobs.advance(store.job, store)
    assert (progress.status, progress.busy, progress.printer_down) == ("queued", True, False)
    assert store.writes[-1] == "queued in 0.001"  # no job was made: nothing to look up
    printer.busy_for = 0
    assert (await jobs.advance(store.job, store)).status == "submitted"
    assert printer.sent == ["card-1"]


async def test_advance_until_settled_waits_out_a_busy_printer() -> None:
    printer, store = FakePrinter(busy_for=1000), Store()
    jobs = machine(printer, replace(POLICY, busy_s=0.001, busy_wait_s=0.005))
    progress = await jobs.advance_until_settled(store.job, store, store.reload, wait_s=0.05)
    assert (progress.status, progress.busy) == ("queued", True)  # the caller's wait ran out
    printer.busy_for = 2
    progress = await jobs.advance_until_settled(store.job, store, store.reload, wait_s=5)
    assert (progress.status, printer.sent) == ("printed", ["card-1"])


async def test_a_server_error_to_print_job_made_no_job_so_it_is_queued_not_looked_up() -> None:
    printer, store = FakePrinter(server_error=True), Store()
    jobs = machine(printer)
    progress = await jobs.advance(store.job, store)
    assert (progress.status, progress.printer_down) == ("queued", True)
    assert store.job.status == "queued"
    printer.server_error = False
    assert (await jobs.advance(store.job, store)).status == "submitted"
    assert printer.sent == ["card-1"]


async def test_a_maybe_sent_job_hidden_by_a_long_history_is_spoiled_never_sent() -> None:
    printer = FakePrinter(forgets_far_back=True)
    store = Store(job=Job(status="submitting", attempts=1))
    progress = await machine(printer).advance(store.job, store)
    assert progress.status == "spoiled"
    assert progress.problem is not None
    assert progress.problem.startswith("outcome unknown")
    assert printer.sent == []


async def test_a_maybe_sent_job_the_printer_never_got_is_sent() -> None:
    printer, store = FakePrinter(), Store(job=Job(status="submitting", attempts=1))
    assert (await machine(printer).advance(store.job, store)).status == "submitted"
    assert (printer.sent, store.job.attempts) == (["card-1"], 2)


async def test_printer_down_the_job_waits_with_capped_backoff_then_prints() -> None:
    printer, store = FakePrinter(down=True), Store()
    jobs = machine(printer)
    delays = []
    for _ in range(5):
        progress = await jobs.advance(store.job, store)
        assert (progress.status, progress.printer_down) == ("submitting", True)
        delays.append(store.job.retry_in_s)
    assert delays == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert store.job.problem == "printer unreachable: ConnectError"
    printer.down = False
    assert (await jobs.advance(store.job, store)).status == "submitted"
    assert printer.sent == ["card-1"]
    printer.down = True  # down again: the backoff starts over, the job keeps its status
    assert (await jobs.advance(store.job, store)).status == "submitted"
    assert store.job.retry_in_s == 0.5


async def test_rejected_jobs_are_retried_then_spoiled() -> None:
    printer, store = FakePrinter(rejects=True), Store()
    jobs = machine(printer)
    first = await jobs.advance(store.job, store)
    assert (first.status, store.job.rejections, store.job.retry_in_s) == ("queued", 1, 0.5)
    assert (await jobs.advance(store.job, store)).status == "queued"
    assert store.job.retry_in_s == 1.0
    last = await jobs.advance(store.job, store)
    assert last.status == "spoiled"
    assert last.problem is not None
    assert last.problem.startswith("printer rejected the job 3 times: IPP status 0x040A")
    assert store.writes[-2:] == ["rejected 3", "spoiled"]


async def test_without_a_rejection_limit_a_rejected_job_waits_in_the_queue() -> None:
    printer, store = FakePrinter(rejects=True), Store()
    jobs = machine(printer, replace(POLICY, max_rejections=None))
    for _ in range(5):
        assert (await jobs.advance(store.job, store)).status == "queued"
    assert store.job.rejections == 5


async def test_an_aborted_job_is_spoiled_with_the_printers_reason() -> None:
    printer, store = FakePrinter(finish_as=JobState.ABORTED), Store()
    jobs = machine(printer)
    await jobs.advance(store.job, store)
    spoiled = await jobs.advance(store.job, store)
    assert (spoiled.status, spoiled.problem) == ("spoiled", "printer aborted job 1: media-jam")


async def test_a_job_the_printer_forgot_is_spoiled_never_sent_again() -> None:
    printer, store = FakePrinter(), Store()
    jobs = machine(printer)
    await jobs.advance(store.job, store)
    printer.jobs.clear()  # the printer restarted and lost its history
    spoiled = await jobs.advance(store.job, store)
    assert spoiled.status == "spoiled"
    assert "no record of job 1" in (spoiled.problem or "")
    assert printer.sent == ["card-1"]


async def test_a_finished_job_is_left_alone() -> None:
    printer, store = FakePrinter(), Store(job=Job(status="printed", ipp_job_id=4))
    assert await machine(printer).advance(store.job, store) == Progress("printed", ipp_job_id=4)
    assert (store.writes, printer.sent) == ([], [])


async def test_advance_until_settled_prints_within_the_wait_or_answers_submitted() -> None:
    printer, store = FakePrinter(polls_until_done=2), Store()
    jobs = machine(printer)
    done = await jobs.advance_until_settled(store.job, store, store.reload, wait_s=5.0, poll_s=0.01)
    assert done.status == "printed"
    slow, later = FakePrinter(polls_until_done=1000), Store()
    waiting = await machine(slow).advance_until_settled(
        later.job, later, later.reload, wait_s=0.05, poll_s=0.01
    )
    assert (waiting.status, waiting.ipp_job_id) == ("submitted", 1)
    down, queued = FakePrinter(down=True), Store()
    refused = await machine(down).advance_until_settled(
        queued.job, queued, queued.reload, wait_s=5.0
    )
    assert (refused.status, refused.printer_down) == ("submitting", True)


async def test_the_watch_hears_up_down_and_each_outcome() -> None:
    printer, store = FakePrinter(down=True), Store()
    jobs = machine(printer)
    await jobs.advance(store.job, store)
    printer.down = False
    await jobs.advance(store.job, store)
    await jobs.advance(store.job, store)
    assert isinstance(jobs.watch, Watch)
    assert jobs.watch.seen == ["down", "unreachable", "up", "up", "submitted", "up", "printed"]
