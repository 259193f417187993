"""PIN mailers: printed by keymgmt itself on the separate PIN printer, the only place the clear
PIN exists outside the HSM (DOMAIN.md: "the PIN mailer is printed from the encrypted block").

POST /v1/pin-mailers (the fulfillment service): keymgmt decrypts the card's PIN block with the
issuer's PIN key in the HSM, lays the mailer out in memory (service.py), sends it to the PIN
printer over IPP and follows the job; fulfillment gets back only the mailer id and the job's
status. The PIN is never stored, logged, returned or put in an event.

This module is the print-job state machine, in one place so that a shared print-job component
can replace it: a mailer's job is recorded before it is sent; a job that may have reached the
printer is looked up there by its job name before anything is sent again, so a PIN is never
printed twice. It runs on its own connection and commits each state as it is reached (the
states must be durable before the printer is asked), which is why it, not a unit of work, owns
those commits.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import Field
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
from shared.ipp import IppClient, IppError, IppRejected, JobState
from shared.settings import BureauSettings

log = logging.getLogger(__name__)


class PinMailerSettings(BureauSettings):
    pin_printer_uri: str = Field(
        default="ipp://localhost:8632/ipp/print",
        description="BUREAU_PIN_PRINTER_URI: the PIN-mailer printer (deploy/local/printers.sh)",
    )
    pin_printer_timeout_s: float = Field(default=10.0, gt=0)
    pin_mailer_wait_s: float = Field(default=10.0, gt=0, description="follow a job this long")


class PinPrinter:
    """The PIN printer's IPP client, made on first use (its settings are read then, as before
    the wiring moved it into keymgmt's deps) and closed when the service stops."""

    def __init__(self) -> None:
        self._client: IppClient | None = None
        self._settings: PinMailerSettings | None = None

    def get(self) -> tuple[IppClient, PinMailerSettings]:
        if self._client is None or self._settings is None:
            self._settings = PinMailerSettings()
            self._client = IppClient(
                self._settings.pin_printer_uri,
                user="keymgmt",
                timeout_s=self._settings.pin_printer_timeout_s,
            )
        return self._client, self._settings

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


async def _set(conn: AsyncConnection, repo: KeymgmtRepository, card: Any, **changes: Any) -> None:
    await repo.pin_mailers.update(card, **changes)
    await conn.commit()


async def _print(
    conn: AsyncConnection,
    repo: KeymgmtRepository,
    body: PinMailerRequest,
    who: str,
    gate: HsmGate,
    printer: PinPrinter,
) -> dict[str, Any]:
    client, settings = printer.get()
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
    if row["status"] == "submitting":
        try:
            found = await client.find_job(row["job_name"])
        except IppError as exc:
            raise PinPrinterUnavailable(f"PIN printer unavailable: {exc}") from exc
        if found is not None:
            await _set(conn, repo, body.card_id, status="submitted", ipp_job_id=found.job_id)
            row = {**row, "status": "submitted", "ipp_job_id": found.job_id}
    if row["status"] in ("queued", "submitting"):
        row = await _submit(conn, repo, row, client, gate)
    if row["status"] == "submitted":
        row = await _follow(conn, repo, row, client, settings.pin_mailer_wait_s)
    return row


async def _document(
    conn: AsyncConnection, repo: KeymgmtRepository, row: dict[str, Any], gate: HsmGate
) -> bytes:
    """The mailer as a PNG, from the PIN block revealed in the HSM (the PIN zeroed after)."""
    card_id = row["card_id"]
    vaulted = await repo.vault.vault_card(card_id)
    pin_row = await repo.emv.card_pin(card_id)
    if vaulted is None or pin_row is None:
        raise NoPinMailer("the card is not in the vault")
    await repo.vault.record_access([(card_id, "service:fulfillment", "pin-mailer")])
    # Durable BEFORE the request: from here on, a retry looks the job up first.
    await _set(conn, repo, card_id, status="submitting", attempts=row["attempts"] + 1)
    try:
        pin, card = await gate.get().call(reveal_pin, vaulted, pin_row)
    except PinMailerError as exc:
        await _set(conn, repo, card_id, status="queued", last_problem=str(exc)[:500])
        raise PinNotRevealable(str(exc)) from exc
    try:
        mailer = mailer_text(str(pin_row["issuer_id"]), card)
        return await asyncio.to_thread(render_pin_mailer, mailer, pin)
    finally:
        pin[:] = bytes(len(pin))


async def _submit(
    conn: AsyncConnection,
    repo: KeymgmtRepository,
    row: dict[str, Any],
    printer: IppClient,
    gate: HsmGate,
) -> dict[str, Any]:
    card_id = row["card_id"]
    document = await _document(conn, repo, row, gate)
    try:
        status = await printer.print_job(
            document, job_name=row["job_name"], document_format="image/png"
        )
    except IppRejected as exc:
        await _set(conn, repo, card_id, status="queued", last_problem=str(exc)[:500])
        raise PinPrinterUnavailable(f"the PIN printer rejected the mailer: {exc}") from exc
    except IppError as exc:  # maybe printed: the next request looks it up first
        await _set(conn, repo, card_id, last_problem=str(exc)[:500])
        raise PinPrinterUnavailable(f"PIN printer unavailable: {exc}") from exc
    finally:
        del document
    await _set(conn, repo, card_id, status="submitted", ipp_job_id=status.job_id, last_problem=None)
    log.info("PIN mailer sent to the PIN printer", extra={"card_id": str(card_id)})
    attempts = row["attempts"] + 1
    return (
        row
        | {"status": "submitted", "ipp_job_id": status.job_id, "attempts": attempts}
        | {"last_problem": None}
    )


async def _follow(
    conn: AsyncConnection,
    repo: KeymgmtRepository,
    row: dict[str, Any],
    printer: IppClient,
    wait_s: float,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            job = await printer.job(row["ipp_job_id"])
        except IppRejected as exc:  # the printer forgot the job: its outcome is unknown
            lost = f"the PIN printer has no record of job {row['ipp_job_id']}: {exc}"
            await _set(conn, repo, row["card_id"], status="spoiled", last_problem=lost[:500])
            return {**row, "status": "spoiled", "last_problem": lost}
        except IppError as exc:
            raise PinPrinterUnavailable(f"PIN printer unavailable: {exc}") from exc
        if job.state.final:
            status = "printed" if job.state is JobState.COMPLETED else "spoiled"
            problem: str | None = None
            if status != "printed":
                problem = ", ".join(job.reasons) or job.state.name
            await _set(conn, repo, row["card_id"], status=status, last_problem=problem)
            return {**row, "status": status, "last_problem": problem}
        if loop.time() >= deadline:
            return row
        await asyncio.sleep(0.1)
