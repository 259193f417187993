"""The card printer over IPPS (issue 16): graphical speaks only ipps:// to it and verifies its
certificate against the configured CA and its name against the URI's host, like the PIN
printer. Real ippeveprinters serving TLS on free ports under the test's folder (never the
stack's printers): one whose certificate comes from a CA graphical does not trust, one whose
certificate names another host. Each is refused before any face (with its CVV2) leaves: the
printer receives nothing, the job waits (retried, not lost, not spoiled) naming the problem.

(Every other graphical test prints through a TLS printer with its own CA: tests/support/
graphical.py's `printer` fixture.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from services.graphical.app import build_app
from services.graphical.printer import job_name_for
from services.graphical.settings import GraphicalSettings
from tests.conftest import running
from tests.support.bus import wait_for
from tests.support.graphical import (
    KeymgmtDouble,
    encoded,
    graphical,
    publish,
)
from tests.support.printer import TestPrinter
from tests.support.tls import TestCa

pytestmark = pytest.mark.integration


def test_graphical_refuses_a_plain_ipp_card_printer() -> None:
    with pytest.raises(ValidationError, match="(?s)card_printer_uri.*ipps:// only"):
        GraphicalSettings(environment="test", card_printer_uri="ipp://localhost:8631/ipp/print")


@pytest.mark.parametrize("wrong", ["another CA", "another host"])
async def test_a_card_printer_with_a_wrong_certificate_receives_no_face(
    graphical_settings: GraphicalSettings,
    unique: str,
    graphical_keymgmt: KeymgmtDouble,
    printer: TestPrinter,
    tmp_path: Path,
    wrong: str,
) -> None:
    home = tmp_path / "impostor"
    if wrong == "another CA":  # a certificate for localhost, from a CA graphical does not trust
        TestCa.create(home / "rogue", "rogue CA").issue(home / "keys")
    else:  # the trusted CA's own certificate, but for another printer's name
        trusted = TestCa.create(home / "ca", "card CA")
        trusted.issue(home / "keys", names=("printer.example",))
        graphical_settings = graphical_settings.model_copy(
            update={"card_printer_ca": str(trusted.cert_file)}
        )
    impostor = TestPrinter(home, name="impostor", tls_keys=home / "keys")
    impostor.start()
    card_id = graphical_keymgmt.add_card("acme")
    config = graphical_settings.model_copy(update={"card_printer_uri": impostor.uri})
    job: dict[str, Any] = {}
    try:
        await impostor.wait_up()
        async with running(graphical(config, unique)) as runtime:
            await publish(config, "electrical", encoded(card_id))
            transport = httpx.ASGITransport(app=build_app(runtime))
            headers = {"Authorization": f"Bearer op-{unique}"}
            async with httpx.AsyncClient(transport=transport, base_url="http://g") as http:

                async def refused() -> bool:
                    answer = await http.get(f"/v1/print-jobs/{card_id}", headers=headers)
                    job.update(answer.json() if answer.status_code == 200 else {})
                    return "does not verify" in (job.get("last_problem") or "")

                await wait_for(refused, timeout=30)
                await asyncio.sleep(1.0)  # more retries: still nothing reaches the printer
                state = (await http.get("/v1/printer", headers=headers)).json()
    finally:
        impostor.stop()
    assert job["status"] in ("queued", "submitting"), job
    assert "TLS certificate does not verify" in job["last_problem"]
    assert state["state"] == "unreachable", state
    assert not impostor.documents(job_name_for(card_id))
    assert not list(impostor.spool.glob("*"))
