"""The graphical service on the real stack and a real IPP printer (ippeveprinter): card.encoded
in, one Print-Job per card, card.printed out; redelivery, keymgmt outages, unknown cards, bad
print data, a printer that is down, jammed, or whose answer is lost.

keymgmt is another process: `KeymgmtDouble` stands in for it over real HTTP on 127.0.0.1,
serving the vault read endpoints of docs/services.md from test data.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid

import httpx
import pytest
from PIL import Image
from sqlalchemy import text

from services.graphical.app import build_app
from services.graphical.printer import job_name_for
from services.graphical.settings import GraphicalSettings
from shared import events
from tests.conftest import running
from tests.support.bus import collect, settled
from tests.support.graphical import (
    CLEAR_PAN,
    KeymgmtDouble,
    emitted,
    encoded,
    graphical,
    publish,
)
from tests.support.printer import TestPrinter

pytestmark = pytest.mark.integration


async def test_encoded_card_is_printed_once_even_when_redelivered_or_re_encoded(
    graphical_settings: GraphicalSettings,
    unique: str,
    graphical_keymgmt: KeymgmtDouble,
    printer: TestPrinter,
) -> None:
    card_id = graphical_keymgmt.add_card("acme")
    event = encoded(card_id)
    re_encoded = event.model_copy(update={"event_id": uuid.uuid4()})
    async with running(graphical(graphical_settings, unique)) as runtime:
        await publish(graphical_settings, "electrical", event, event, re_encoded)
        await settled(runtime, 3)
        assert runtime.consumer is not None
        assert runtime.consumer.duplicates == 1
        out = await emitted(graphical_settings, 1)
        await asyncio.sleep(1.0)  # give a wrong second print the time to show up
        out = await emitted(graphical_settings, 1)
    assert [e.type for e in out] == ["card.printed"]
    printed = out[0]
    assert isinstance(printed, events.CardPrinted)
    assert printed.card_id == card_id
    assert printed.chip_serial == event.chip_serial
    assert printed.printer == "test-card"
    [document] = printer.documents(job_name_for(card_id))  # one Print-Job, never two
    face = document.read_bytes()
    assert document.suffix == ".jpg"  # sent as image/jpeg
    assert hashlib.sha256(face).hexdigest() == printed.image_sha256
    image = Image.open(io.BytesIO(face))
    assert (image.format, image.size) == ("JPEG", (1011, 638))
    assert graphical_keymgmt.calls["print-data"] == 1
    assert CLEAR_PAN.encode() not in events.encode_event(printed)


async def test_keymgmt_outage_delays_the_card_without_losing_it(
    graphical_settings: GraphicalSettings, unique: str, graphical_keymgmt: KeymgmtDouble
) -> None:
    card_id = graphical_keymgmt.add_card("acme")
    graphical_keymgmt.outage_left = 5  # outlasts the client's own retries: the consumer retries too
    async with running(graphical(graphical_settings, unique)) as runtime:
        await publish(graphical_settings, "electrical", encoded(card_id))
        out = await emitted(graphical_settings, 1)
        assert runtime.consumer is not None
        assert runtime.consumer.dead_lettered == 0
    assert [(e.type, getattr(e, "card_id", None)) for e in out] == [("card.printed", card_id)]
    assert graphical_keymgmt.calls["print-data"] == 6


async def test_a_card_keymgmt_does_not_know_goes_to_the_dead_letter_topic(
    graphical_settings: GraphicalSettings,
    unique: str,
    graphical_keymgmt: KeymgmtDouble,
    printer: TestPrinter,
) -> None:
    unknown = uuid.uuid4()
    async with running(graphical(graphical_settings, unique)):
        await publish(graphical_settings, "electrical", encoded(unknown))
        dead = await collect(
            graphical_settings.kafka_bootstrap,
            graphical_settings.topic("dlq"),
            lambda seen: len(seen) >= 1,
        )
        out = await emitted(graphical_settings, 1)
    assert dict(dead[0].headers)["dlq.reason"].decode().startswith("poison: keymgmt holds no")
    assert [e.type for e in out] == ["dead_letter.recorded"]
    assert not printer.documents(job_name_for(unknown))


async def test_issuer_design_is_used_and_a_clear_pan_spoils_the_card_unprinted(
    graphical_settings: GraphicalSettings,
    unique: str,
    graphical_keymgmt: KeymgmtDouble,
    printer: TestPrinter,
) -> None:
    design = {
        "design_id": "acme-gold",
        "issuer_name": "Acme Gold",
        "background": {"colour": "#c9a227"},
        "fields": [{"kind": "pan", "x": 60, "y": 300, "font_size": 50, "pan_display": "last4"}],
    }
    good = graphical_keymgmt.add_card("acme")
    leaky = graphical_keymgmt.add_card("acme", masked_pan=CLEAR_PAN)  # keymgmt breaks its contract
    runtime = graphical(graphical_settings, unique)
    async with running(runtime):
        transport = httpx.ASGITransport(app=build_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://graphical") as http:
            auth = {"Authorization": f"Bearer op-{unique}"}
            answer = await http.put("/v1/designs/acme", json=design, headers=auth)
            assert answer.status_code == 200, answer.text
            assert (await http.put("/v1/designs/acme", json=design)).status_code == 401
            stored = (await http.get("/v1/designs/acme", headers=auth)).json()
            assert stored["source"] == "issuer"
            assert stored["design"]["design_id"] == "acme-gold"
        good_event, leaky_event = encoded(good), encoded(leaky)
        await publish(graphical_settings, "electrical", good_event, leaky_event)
        out = {e.type: e for e in await emitted(graphical_settings, 2)}
        async with httpx.AsyncClient(transport=transport, base_url="http://graphical") as http:
            job = (await http.get(f"/v1/print-jobs/{good}", headers=auth)).json()
            spoiled_job = (await http.get(f"/v1/print-jobs/{leaky}", headers=auth)).json()
    assert (job["status"], job["design_id"]) == ("printed", "acme-gold")
    assert spoiled_job["status"] == "spoiled"
    printed, spoiled = out["card.printed"], out["card.spoiled"]
    assert isinstance(printed, events.CardPrinted)
    assert printed.card_id == good
    assert isinstance(spoiled, events.CardSpoiled)
    assert spoiled.card_id == leaky
    assert spoiled.stage == "graphical"
    assert "not masked" in spoiled.reason
    assert CLEAR_PAN not in spoiled.reason
    [document] = printer.outputs(job_name_for(good))
    face = Image.open(document)
    pixel = face.convert("RGB").getpixel((5, 5))
    assert isinstance(pixel, tuple)
    # The issuer's background colour, within a JPEG's rounding (print QA allows 48 levels).
    assert all(abs(got - want) <= 4 for got, want in zip(pixel, (0xC9, 0xA2, 0x27), strict=True))
    assert not printer.documents(job_name_for(leaky))


def portrait(colour: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (300, 400), colour).save(out, format="JPEG")
    return out.getvalue()


async def test_photos_are_uploaded_per_card_printed_in_the_photo_box_then_purged(
    graphical_settings: GraphicalSettings,
    unique: str,
    graphical_keymgmt: KeymgmtDouble,
    printer: TestPrinter,
) -> None:
    design = {
        "design_id": "acme-id",
        "issuer_name": "Acme ID",
        "background": {"colour": "#ffffff"},
        "text_colour": "#000000",
        "fields": [{"kind": "cardholder_name", "x": 60, "y": 530, "font_size": 40}],
        "photo": {"x": 780, "y": 40, "width": 180, "height": 240},
    }
    pictured, unpictured = graphical_keymgmt.add_card("acme"), graphical_keymgmt.add_card("acme")
    runtime = graphical(graphical_settings, unique)
    async with running(runtime):
        transport = httpx.ASGITransport(app=build_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://graphical") as http:
            issuer = {"Authorization": f"Bearer iss-{unique}"}
            other = {"Authorization": f"Bearer oth-{unique}"}
            jpeg = issuer | {"Content-Type": "image/jpeg"}
            path = f"/v1/photos/acme/{pictured}"
            assert (
                await http.put("/v1/designs/acme", json=design, headers=issuer)
            ).status_code == 200
            stored = await http.put(path, content=portrait("#b03020"), headers=jpeg)
            assert stored.status_code == 200, stored.text
            other_jpeg = other | {"Content-Type": "image/jpeg"}
            foreign = await http.put(path, content=portrait("#000000"), headers=other_jpeg)
            assert foreign.status_code == 404  # another issuer's path: refused
            stolen = await http.put(
                f"/v1/photos/other/{pictured}", content=portrait("#000000"), headers=other_jpeg
            )
            assert stolen.status_code == 404  # the card's photo is acme's: not replaced
            wrong_type = await http.put(
                path, content=b"x", headers=issuer | {"Content-Type": "text/plain"}
            )
            assert wrong_type.status_code == 415
            garbage = await http.put(
                path.replace(str(pictured), str(uuid.uuid4())), content=b"junk", headers=jpeg
            )
            assert garbage.status_code == 422
            assert "not a readable image" in garbage.json()["detail"]

            await publish(graphical_settings, "electrical", encoded(pictured), encoded(unpictured))
            out = {e.type: e for e in await emitted(graphical_settings, 2)}
    printed, spoiled = out["card.printed"], out["card.spoiled"]
    assert isinstance(printed, events.CardPrinted)
    assert printed.card_id == pictured
    assert isinstance(spoiled, events.CardSpoiled)
    assert (spoiled.card_id, spoiled.reason) == (
        unpictured,
        "render failed: ValueError: the design has a photo box and the card has no photo",
    )
    [output] = printer.outputs(job_name_for(pictured))
    face = Image.open(output).convert("RGB")
    pixel = face.getpixel((870, 160))  # the middle of the photo box
    assert isinstance(pixel, tuple)
    assert pixel[0] > 150
    assert max(pixel[1:]) < 80
    async with runtime.engine.connect() as conn:
        left = await conn.execute(text(f"SELECT count(*) FROM {runtime.schema}.photos"))
        assert left.scalar_one() == 0  # purged once the face was printed (or spoiled)
