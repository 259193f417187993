"""Event handlers of the graphical service: card.encoded -> card face printed (or spoiled)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from dataclasses import replace

from services.graphical.deps import GraphicalDeps
from services.graphical.printer import job_name_for
from services.graphical.render import RenderError
from services.graphical.repository import GraphicalRepository, PrintJob
from services.graphical.service import FaceData, default_design
from shared.events import CardEncoded, CardSpoiled
from shared.handlers import HandlerSpec, PoisonEvent
from shared.keymgmt.errors import KeymgmtRefused
from shared.outbox import UnitOfWork

log = logging.getLogger(__name__)


async def print_card_face(
    uow: UnitOfWork[GraphicalRepository], event: CardEncoded, deps: GraphicalDeps
) -> None:
    """Render the face from the issuer's design and record its print job, document
    included; the print spooler (printing.py) sends it to the printer after this commits.

    The consumer's inbox drops a redelivered event; the unique job per card also stops a
    second card.encoded for the same card (a re-encode, a batch replay) from printing it
    twice: the existing job is left to run its course.
    """
    repo = uow.repo
    await repo.lock_card(event.card_id)
    existing = await repo.job_for_card(event.card_id)
    if existing is not None:
        log.warning(
            "card already has a print job; printing nothing",
            extra={"card_id": str(event.card_id), "status": existing.status},
        )
        return
    try:
        data = await deps.keymgmt.print_data(event.card_id)
    except KeymgmtRefused as exc:
        if exc.not_found:
            raise PoisonEvent(f"keymgmt holds no card {event.card_id}") from exc
        raise
    if data.issuer_id != event.issuer_id:
        raise PoisonEvent(
            f"card {event.card_id} belongs to another issuer in keymgmt than in the event"
        )
    design = await repo.design_for(event.issuer_id) or default_design(event.issuer_id)
    photo = None
    if design.photo is not None:
        photo = await repo.photo_for(event.card_id, event.issuer_id)
    face = FaceData(data.cardholder_name, data.masked_pan, data.expiry, photo, data.cvv2)
    job = PrintJob(
        job_id=uuid.uuid4(),
        card_id=event.card_id,
        batch_id=event.batch_id,
        issuer_id=event.issuer_id,
        chip_serial=event.chip_serial,
        printer=deps.printer_name,
        design_id=design.design_id,
        status="queued",
        image_sha256=None,
        location=None,
        reason=None,
        source_event_id=event.event_id,
        job_name=job_name_for(event.card_id),
        traceparent=event.trace.traceparent if event.trace else None,
    )
    try:
        image = await asyncio.to_thread(deps.renderer.render, design, face)
    except RenderError as exc:
        await _spoil(uow, repo, job, f"render failed: {exc}", deps.actor)
        return
    digest = hashlib.sha256(image).hexdigest()
    await repo.add_job(replace(job, image_sha256=digest), image)
    deps.spooler.wake()  # before the commit is harmless: the spooler also polls
    log.info("card face rendered; print job queued", extra={"card_id": str(event.card_id)})


HANDLERS: HandlerSpec[GraphicalDeps] = {CardEncoded: [print_card_face]}


async def _spoil(
    uow: UnitOfWork[GraphicalRepository],
    repo: GraphicalRepository,
    job: PrintJob,
    reason: str,
    actor: str,
) -> None:
    await repo.add_job(replace(job, status="spoiled", reason=reason[:500]))
    await repo.purge_photo(job.card_id)
    await uow.emit(
        CardSpoiled(
            issuer_id=job.issuer_id,
            actor=actor,
            card_id=job.card_id,
            batch_id=job.batch_id,
            stage="graphical",
            reason=reason[:500],
            chip_serial=job.chip_serial,
        )
    )
    log.warning("card spoiled at graphical", extra={"card_id": str(job.card_id), "reason": reason})
