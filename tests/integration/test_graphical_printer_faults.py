"""The graphical service against a real IPP printer (ippeveprinter) that misbehaves: down,
then jammed (jobs aborted); an answer lost after the printer took the job; a printer that
rejects the document. A card is never lost and never printed twice."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from services.graphical.app import bootstrap, build_app
from services.graphical.printer import IppPrinter, job_name_for
from services.graphical.settings import GraphicalSettings
from shared import events
from shared.ipp import IppUnavailable, JobStatus
from tests.conftest import running
from tests.support.bus import wait_for
from tests.support.graphical import (
    KeymgmtDouble,
    emitted,
    encoded,
    graphical,
    publish,
)
from tests.support.printer import TestPrinter

pytestmark = pytest.mark.integration


async def test_printer_down_then_jammed_the_card_waits_then_is_spoiled_never_lost(
    graphical_settings: GraphicalSettings,
    unique: str,
    graphical_keymgmt: KeymgmtDouble,
    printer: TestPrinter,
) -> None:
    waiting, jammed = graphical_keymgmt.add_card("acme"), graphical_keymgmt.add_card("acme")
    printer.stop()
    runtime = graphical(graphical_settings, unique)
    auth = {"Authorization": f"Bearer op-{unique}"}
    async with running(runtime):
        transport = httpx.ASGITransport(app=build_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://graphical") as http:
            await publish(graphical_settings, "electrical", encoded(waiting))

            async def job_waits() -> bool:
                job = (await http.get(f"/v1/print-jobs/{waiting}", headers=auth)).json()
                return job.get("status") == "submitting" and job["last_problem"] is not None

            await wait_for(job_waits)
            view = (await http.get("/v1/printer", headers=auth)).json()
            assert view["state"] == "unreachable"
            assert view["waiting"][0]["card_id"] == str(waiting)
            metrics = (await http.get("/metrics")).text
            assert 'bureau_printer_up{printer="test-card"} 0' in metrics

            printer.start()  # back: the waiting job is looked up, then sent once
            await printer.wait_up()
            out = await emitted(graphical_settings, 1)
            assert [(e.type, getattr(e, "card_id", None)) for e in out] == [
                ("card.printed", waiting)
            ]
            assert len(printer.documents(job_name_for(waiting))) == 1

            printer.jam()
            await publish(graphical_settings, "electrical", encoded(jammed))
            out = await emitted(graphical_settings, 2)
            job = (await http.get(f"/v1/print-jobs/{jammed}", headers=auth)).json()
    spoiled = out[1]
    assert isinstance(spoiled, events.CardSpoiled)
    assert (spoiled.card_id, spoiled.stage) == (jammed, "graphical")
    assert "aborted" in spoiled.reason
    assert job["status"] == "spoiled"


class LosesAnswers(IppPrinter):
    """The real printer, but the answer to the first Print-Job never comes back."""

    lost = 0

    async def print_job(self, document: bytes, *, job_name: str, document_format: str) -> JobStatus:
        status = await super().print_job(
            document, job_name=job_name, document_format=document_format
        )
        if not self.lost:
            self.lost += 1
            raise IppUnavailable("connection reset before the answer")
        return status


async def test_a_lost_print_job_answer_is_looked_up_not_printed_again(
    graphical_settings: GraphicalSettings,
    unique: str,
    graphical_keymgmt: KeymgmtDouble,
    printer: TestPrinter,
) -> None:
    card_id = graphical_keymgmt.add_card("acme")
    device = LosesAnswers("test-card", printer.uri, ca_file=printer.ca)
    runtime = bootstrap(graphical_settings, schema=f"graphical_{unique}", printer=device)
    try:
        async with running(runtime):
            await publish(graphical_settings, "electrical", encoded(card_id))
            out = await emitted(graphical_settings, 1)
            transport = httpx.ASGITransport(app=build_app(runtime))
            async with httpx.AsyncClient(transport=transport, base_url="http://g") as http:
                headers = {"Authorization": f"Bearer qa-{unique}"}
                render = await http.get(f"/v1/print-jobs/{card_id}/render", headers=headers)
                job = (await http.get(f"/v1/print-jobs/{card_id}", headers=auth(unique))).json()
    finally:
        await device.aclose()
    assert device.lost == 1
    assert [e.type for e in out] == ["card.printed"]
    printed = out[0]
    assert isinstance(printed, events.CardPrinted)
    [document] = printer.documents(job_name_for(card_id))  # sent once, found again by name
    assert hashlib.sha256(document.read_bytes()).hexdigest() == printed.image_sha256
    assert (job["attempts"], job["status"]) == (1, "printed")
    assert render.status_code == 404  # the face itself is not kept once printed


def auth(unique: str) -> dict[str, str]:
    return {"Authorization": f"Bearer op-{unique}"}


async def test_a_printer_that_rejects_the_job_is_retried_then_the_card_is_spoiled(
    graphical_settings: GraphicalSettings,
    unique: str,
    graphical_keymgmt: KeymgmtDouble,
    tmp_path: Path,
) -> None:
    pdf_only = TestPrinter.tls(tmp_path / "pdf-only", formats="application/pdf")
    pdf_only.start()
    try:
        await pdf_only.wait_up()
        card_id = graphical_keymgmt.add_card("acme")
        update = {"card_printer_uri": pdf_only.uri, "card_printer_ca": pdf_only.ca}
        config = graphical_settings.model_copy(update=update)
        runtime = graphical(config, unique)
        async with running(runtime):
            await publish(config, "electrical", encoded(card_id))
            out = await emitted(config, 1)
            transport = httpx.ASGITransport(app=build_app(runtime))
            async with httpx.AsyncClient(transport=transport, base_url="http://g") as http:
                job = (await http.get(f"/v1/print-jobs/{card_id}", headers=auth(unique))).json()
    finally:
        pdf_only.stop()
    spoiled = out[0]
    assert isinstance(spoiled, events.CardSpoiled)
    assert spoiled.reason.startswith("printer rejected the job 3 times: IPP status 0x040B")
    assert "Unsupported document-format" in spoiled.reason
    assert (job["status"], job["rejections"], job["attempts"]) == ("spoiled", 3, 3)
    assert not pdf_only.documents(job_name_for(card_id))
