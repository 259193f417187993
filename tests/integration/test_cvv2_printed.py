"""The CVV2 printed on the card body and then gone (issue 13), on the real stack.

In this process: intake vaults the card, keymgmt prepares it (a product with a CVK pair loaded
by ceremony into a fresh SoftHSM token) and serves HTTP on a loopback port; graphical, whose issuer
design has a "cvv2" field, fetches the print view and prints the face on a real IPP printer.
Electrical is played by publishing card.encoded.

The document the printer received is the face rendered with psec's CVV2 for the PAN, expiry
and test CVK (an independent oracle), not the face without it; afterwards the CVV2 is in no
table of the three services, no record of the test's topics and no log record.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import pytest
from psec import cvv

from services.graphical.app import bootstrap as graphical_bootstrap
from services.graphical.render import FaceRenderer
from services.graphical.service import Background, CardDesign, FaceData, TextField
from services.graphical.settings import DEJAVU_SANS
from services.keymgmt.app import build_app
from services.keymgmt.emv.cvv import CVV2_SERVICE_CODE
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremonies import load_demo_keys
from services.keymgmt.settings import KeymgmtSettings
from shared import events
from shared.pan import mask_pan
from shared.service import ServiceRuntime
from tests.conftest import running
from tests.support.bus import collect
from tests.support.intake import card as order_line
from tests.support.intake import started_intake
from tests.support.keymgmt import CVK, auth, load_security_keys, prepared_events
from tests.support.keymgmt import publish as publish_as
from tests.support.loopback import served
from tests.support.printer import TestPrinter
from tests.support.purge_flow import graphical_for
from tests.support.purge_scan import log_hits, short_secret, table_hits, topic_hits

pytestmark = pytest.mark.integration

ISSUER, PAN, EXPIRY = "bank-a", "4761739001010044", "2812"
LINE = order_line(0, pan=PAN, expiry=EXPIRY, cardholder_name="CARD V BACK")
DESIGN = CardDesign(
    design_id="with-cvv2",
    issuer_name="Bank A",
    background=Background(colour="#1f3a5f"),
    fields=(
        TextField(kind="pan", x=60, y=330, font_size=58),
        TextField(kind="expiry", x=520, y=455, font_size=40),
        TextField(kind="cvv2", x=820, y=455, font_size=40),
    ),
)


async def encode(settings: KeymgmtSettings, prepared: events.CardPrepared) -> None:
    card = prepared.card_id
    encoded = events.CardEncoded(
        issuer_id=prepared.issuer_id,
        actor="station-a",
        card_id=card,
        batch_id=prepared.batch_id,
        chip_serial="CS" + card.hex[:10].upper(),
        station_id="station-a",
        reader="reader-0",
        apdu_count=12,
    )
    await publish_as(settings, encoded, stream="electrical")
    await collect(
        settings.kafka_bootstrap,
        settings.topic("graphical"),
        lambda seen: any(b'"card.printed"' in r.value for r in seen),
    )


async def test_the_cvv2_from_the_hsm_reaches_the_printer_and_is_kept_nowhere(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
    printer: TestPrinter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for ours in ("services", "shared"):
        caplog.set_level(logging.DEBUG, logger=ours)
    runtime, http = keymgmt
    await load_demo_keys(settings, ISSUER)
    await load_security_keys(runtime, keymgmt_hsm, ISSUER)  # the CVK pair, psec's CVK
    put = await http.put(
        f"/v1/products/{ISSUER}/debit", json={"cvv": True}, headers=auth(f"cu-{unique}")
    )
    assert put.status_code == 200, put.text
    expected = cvv.generate_cvv(CVK, PAN, EXPIRY, CVV2_SERVICE_CODE)

    async with (
        started_intake(settings, http, unique, topic_prefix=settings.topic_prefix) as intake,
        served(build_app(runtime)) as url,
    ):
        ordered = await intake.order(ISSUER, f"cvv2-{unique}", [LINE])
        assert ordered.status_code == 201, ordered.text
        [prepared] = await prepared_events(settings, 1)
        assert isinstance(prepared, events.CardPrepared)
        graphical = graphical_bootstrap(
            graphical_for(unique, url, printer), schema=f"graphical_{unique}"
        )
        async with running(graphical):
            async with graphical.unit_of_work() as uow:
                await uow.repo.save_design(ISSUER, DESIGN, "test")
            await encode(settings, prepared)

    [document] = printer.documents(f"card-{prepared.card_id}")
    renderer = FaceRenderer(DEJAVU_SANS)
    masked = mask_pan(PAN)
    with_cvv2 = renderer.render(DESIGN, FaceData("CARD V BACK", masked, EXPIRY, cvv2=expected))
    without = renderer.render(DESIGN, FaceData("CARD V BACK", masked, EXPIRY))
    printed = hashlib.sha256(document.read_bytes()).hexdigest()
    assert printed == hashlib.sha256(with_cvv2).hexdigest(), "the face carries psec's CVV2"
    assert printed != hashlib.sha256(without).hexdigest()

    secret = short_secret("CVV2", expected, "cvv2")
    schemas = [runtime.schema, f"intake_{unique}", f"graphical_{unique}"]
    assert await table_hits(runtime.engine, schemas, [secret]) == []
    count, in_topics = await topic_hits(settings.kafka_bootstrap, settings.topic_prefix, [secret])
    assert count >= 3, "the scan read the test's records"
    assert in_topics == []
    assert caplog.records, "the services logged"
    assert log_hits(caplog.records, [secret]) == []
