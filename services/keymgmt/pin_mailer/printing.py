"""PIN mailers: printed by keymgmt itself on the separate PIN printer, the only place the clear
PIN exists outside the HSM (DOMAIN.md: "the PIN mailer is printed from the encrypted block").

POST /v1/pin-mailers (the fulfillment service): keymgmt decrypts the card's PIN block with the
issuer's PIN key in the HSM, lays the mailer out in memory (service.py), sends it to the PIN
printer over IPPS (IPP over TLS, the printer's certificate verified; plain ipp:// is refused)
and follows the job; fulfillment gets back only the mailer id and the job's status. The PIN is
never stored, logged, returned or put in an event.

The print job is the shared print-job machine's (shared/print_jobs.py, as graphical's spooler):
a mailer's job is recorded before it is sent; a job that may have reached the printer is
looked up there by its job name before anything is sent again, so a PIN is never printed
twice. PinMailerJobs is its store over pin_mailers: it runs on the request's own connection and
commits each state as it is reached (the states must be durable before the printer is asked),
which is why it, not a unit of work, owns those commits. A printer that cannot be reached
leaves the mailer's status as it was, with the problem, and answers 503; so does a rejection,
which puts the mailer back to `queued` (no limit: fulfillment asks again).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from pydantic import Field, ValidationError, field_validator
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.keymgmt.hsm.gate import HsmGate
from services.keymgmt.pin_mailer.schemas import (
    NoPinMailer,
    PinMailerRequest,
    PinNotRevealable,
    PinPrinterUnavailable,
)
from services.keymgmt.pin_mailer.service import (
    PinMailerError,
    mailer_id_for,
    mailer_text,
    render_pin_mailer,
    reveal_pin,
)
from services.keymgmt.repository import KeymgmtRepository
from shared.ipp import IppClient, JobStatus, printer_url
from shared.print_jobs import (
    PRINTED,
    PROBLEM_LIMIT,
    QUEUED,
    SPOILED,
    SUBMITTED,
    SUBMITTING,
    PrintJobMachine,
    PrintPolicy,
)
from shared.settings import BureauSettings

log = logging.getLogger(__name__)


class PinMailerSettings(BureauSettings):
    pin_printer_uri: str = Field(
        default="ipps://localhost:8632/ipp/print",
        description="BUREAU_PIN_PRINTER_URI: the PIN-mailer printer, ipps:// only "
        "(deploy/local/printers.sh serves it over TLS)",
    )
    pin_printer_ca: str | None = Field(
        default=None,
        description="BUREAU_PIN_PRINTER_CA: PEM file of the CA the PIN printer's certificate "
        "must chain to (the local stack's: <run>/printers/tls/ca.crt); unset: the system's",
    )
    pin_printer_timeout_s: float = Field(default=10.0, gt=0)
    pin_mailer_wait_s: float = Field(default=10.0, gt=0, description="follow a job this long")

    @field_validator("pin_printer_uri")
    @classmethod
    def _ipps_only(cls, uri: str) -> str:
        if printer_url(uri)[1]:
            return uri
        raise ValueError("the PIN printer is reached over ipps:// only: a PIN never travels clear")


class PinPrinter:
    """The PIN printer's IPP client, made on first use (its settings are read then, as before
    the wiring moved it into keymgmt's deps) and closed when the service stops. It speaks IPP
    over TLS only, the printer's certificate verified against the configured CA."""

    def __init__(self) -> None:
        self._client: IppClient | None = None
        self._machine: PrintJobMachine | None = None
        self._settings: PinMailerSettings | None = None

    def get(self) -> tuple[PrintJobMachine, PinMailerSettings]:
        """The PIN printer's print-job machine: a rejected mailer goes back to `queued` and is
        answered 503, without a limit (fulfillment asks again). Settings that name no usable
        ipps:// printer are a 503 naming the setting, before any mailer is touched."""
        if self._machine is None or self._settings is None:
            try:
                settings = PinMailerSettings()
            except ValidationError as exc:
                problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
                raise PinPrinterUnavailable(f"PIN printer misconfigured: {problems}") from exc
            self._client = IppClient(
                settings.pin_printer_uri,
                user="keymgmt",
                timeout_s=settings.pin_printer_timeout_s,
                ca_file=settings.pin_printer_ca,
                require_tls=True,
            )
            self._settings = settings
            self._machine = PrintJobMachine(
                self._client,
                document_format="image/png",
                policy=PrintPolicy(max_rejections=None),
            )
        return self._machine, self._settings

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


async def print_mailer(
    engine: AsyncEngine, body: PinMailerRequest, who: str, gate: HsmGate, printer: PinPrinter
) -> dict[str, Any]:
    """Print the card's mailer once; the mailer's row as it stands when this returns."""
    async with engine.connect() as conn:
        repo = KeymgmtRepository(conn)
        await repo.pin_mailers.lock_card(body.card_id)
        await conn.commit()
        try:
            return await _print(conn, repo, body, who, gate, printer)
        finally:
            await conn.rollback()
            await repo.pin_mailers.unlock_card(body.card_id)
            await conn.commit()


@dataclass(frozen=True)
class MailerJob:
    """A pin_mailers row as the shared print-job machine reads it."""

    row: dict[str, Any]
    rejections: int = 0  # not counted: the policy has no rejection limit

    @property
    def job_name(self) -> str | None:
        return str(self.row["job_name"])

    @property
    def status(self) -> str:
        return str(self.row["status"])

    @property
    def ipp_job_id(self) -> int | None:
        job_id = self.row["ipp_job_id"]
        return None if job_id is None else int(job_id)


class PinMailerJobs:
    """The PrintJobStore of PIN mailers: pin_mailers rows on the request's connection, each
    state committed as it is reached (durable before the printer is asked)."""

    def __init__(self, conn: AsyncConnection, repo: KeymgmtRepository, gate: HsmGate) -> None:
        self.conn, self.repo, self.gate = conn, repo, gate

    async def _set(self, job: MailerJob, **changes: Any) -> None:
        await self.repo.pin_mailers.update(job.row["card_id"], **changes)
        await self.conn.commit()

    async def start_submission(self, job: MailerJob, *, retry_in_s: float) -> bytes:
        """The mailer as a PNG, from the PIN block revealed in the HSM (the PIN zeroed after)."""
        card_id = job.row["card_id"]
        vaulted = await self.repo.vault.vault_card(card_id)
        pin_row = await self.repo.emv.card_pin(card_id)
        if vaulted is None or pin_row is None:
            raise NoPinMailer("the card is not in the vault")
        await self.repo.vault.record_access([(card_id, "service:fulfillment", "pin-mailer")])
        # Durable BEFORE the request: from here on, a retry looks the job up first.
        await self._set(job, status=SUBMITTING, attempts=job.row["attempts"] + 1)
        try:
            pin, card = await self.gate.get().call(reveal_pin, vaulted, pin_row)
        except PinMailerError as exc:
            await self._set(job, status=QUEUED, last_problem=str(exc)[:PROBLEM_LIMIT])
            raise PinNotRevealable(str(exc)) from exc
        try:
            mailer = mailer_text(str(pin_row["issuer_id"]), card)
            return await asyncio.to_thread(render_pin_mailer, mailer, pin)
        finally:
            pin[:] = bytes(len(pin))

    async def submitted(
        self, job: MailerJob, printed: JobStatus, *, location: str, retry_in_s: float
    ) -> None:
        await self._set(job, status=SUBMITTED, ipp_job_id=printed.job_id, last_problem=None)
        log.info("PIN mailer sent to the PIN printer", extra={"card_id": str(job.row["card_id"])})

    async def reschedule(
        self, job: MailerJob, *, status: str, retry_in_s: float, problem: str | None
    ) -> None:
        await self._set(job, status=status, last_problem=problem)

    async def rejected(
        self, job: MailerJob, *, rejections: int, retry_in_s: float, problem: str
    ) -> None:
        await self._set(job, status=QUEUED, last_problem=problem)

    async def finish(self, job: MailerJob, printed: JobStatus | None, problem: str | None) -> None:
        await self._set(job, status=PRINTED if problem is None else SPOILED, last_problem=problem)


async def _print(
    conn: AsyncConnection,
    repo: KeymgmtRepository,
    body: PinMailerRequest,
    who: str,
    gate: HsmGate,
    printer: PinPrinter,
) -> dict[str, Any]:
    machine, settings = printer.get()
    row = await repo.pin_mailers.mailer(body.card_id)
    if row is None:
        pin_row = await repo.emv.card_pin(body.card_id)
        if pin_row is None:
            raise NoPinMailer("no PIN for this card")
        mailer_id = mailer_id_for(body.card_id)
        await repo.pin_mailers.add_mailer(
            {"m": mailer_id, "c": body.card_id, "b": body.batch_id, "i": pin_row["issuer_id"]}
            | {"j": f"pin-{mailer_id}", "by": f"service:{who}"}
        )
        await conn.commit()
        row = await repo.pin_mailers.mailer(body.card_id)
        assert row is not None

    async def reload() -> MailerJob:
        again = await repo.pin_mailers.mailer(body.card_id)
        assert again is not None
        return MailerJob(again)

    store = PinMailerJobs(conn, repo, gate)
    progress = await machine.advance_until_settled(
        MailerJob(row), store, reload, wait_s=settings.pin_mailer_wait_s
    )
    if progress.printer_down:
        raise PinPrinterUnavailable(f"PIN printer unavailable: {progress.problem}")
    if progress.status == QUEUED and progress.problem is not None:
        raise PinPrinterUnavailable(f"the PIN printer rejected the mailer: {progress.problem}")
    return (await reload()).row
