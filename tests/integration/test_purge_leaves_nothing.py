"""After the retention purge nothing sensitive of a dispatched card is left anywhere (issue 16).

On the real stack (Postgres, Kafka, a fresh SoftHSM token, real IPP printers, the PIN printer
over IPPS), in this process: intake, which takes the issuer's order and vaults the card;
keymgmt, which prepares it and serves HTTP on a loopback port; graphical, which fetches the
card's face from it and prints it; fulfillment, which packs the card with its carrier letter,
has keymgmt print the PIN mailer, and dispatches. Electrical, qa and audit are played by
publishing their events (card.encoded, card.qa_passed, batch.reconciled) on their topics.

The card's PAN (ASCII, chip BCD, hex), cardholder name, address, CVV/iCVV/CVV2 (computed by
psec from the test's CVK, an independent oracle), PIN, PIN blocks (clear and encrypted) and the
vault's encrypted record are then searched for in every table of the four services' schemas,
every file the services wrote and every record of every topic of the test. The same scan finds
them before the purge, and finds a PAN planted afterwards in a table, a file and a topic, so an
empty result means something.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from psec import cvv, pinblock
from sqlalchemy import text

from services.fulfillment.app import bootstrap as fulfillment_bootstrap
from services.graphical.app import bootstrap as graphical_bootstrap
from services.keymgmt.app import build_app
from services.keymgmt.emv.cvv import CVV2_SERVICE_CODE, ICVV_SERVICE_CODE
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremonies import load_demo_keys
from services.keymgmt.keys.ceremony import KeyUsage
from services.keymgmt.settings import KeymgmtSettings
from shared import events
from shared.bus import make_producer
from shared.service import ServiceRuntime
from tests.conftest import running
from tests.support.bus import collect, wait_for
from tests.support.intake import card as order_line
from tests.support.intake import started_intake
from tests.support.keymgmt import CVK, PIN_3DES, auth, load_security_keys, prepared_events
from tests.support.keymgmt import publish as publish_as
from tests.support.loopback import served
from tests.support.printer import TestPrinter
from tests.support.purge_flow import fulfillment_for, graphical_for
from tests.support.purge_scan import (
    Secret,
    bytes_secret,
    field_secret,
    file_hits,
    log_hits,
    pan_secret,
    short_secret,
    table_hits,
    text_secret,
    topic_hits,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

ISSUER, PAN = "bank-a", "4761739001010044"  # an issuer of started_intake; a Luhn-valid PAN
EXPIRY, SERVICE_CODE = "2812", "201"  # the order's expiry, keymgmt's default service code
STREET, POSTCODE, CITY = "17 Retention Road", "RT1 7PG", "Purgeville"
ADDRESS = {"lines": [STREET], "postcode": POSTCODE, "city": CITY, "country": "GB"}
LINE = order_line(
    0,
    pan=PAN,
    expiry=EXPIRY,
    cardholder_name="JANE Q PURGETEST",
    address=ADDRESS,
)
VAULT_COLUMNS = ("pan_blob", "record_blob", "pan_hash")
KEPT_UNTIL_PURGE = {
    "card_pins.iso0_block",
    "card_pins.iso4_block",
    "card_verification_values.sealed",
    *(f"vault_cards.{column}" for column in VAULT_COLUMNS),
}
PROFILE = {
    "pin_length": 4,
    "pin_formats": ["ISO-9564-1-FORMAT-0", "ISO-9564-1-FORMAT-4"],
    "pin_verification": "visa-pvv",
    "pvki": "2",
    "cvv": True,
}


async def stored_secrets(runtime: ServiceRuntime, card_id: str) -> list[Secret]:
    """What keymgmt holds of the card, in every form, with the values psec derives."""
    async with runtime.engine.connect() as conn:
        c = {"c": card_id}
        pins = (
            await conn.execute(
                text("SELECT iso0_block, iso4_block FROM card_pins WHERE card_id = :c"), c
            )
        ).one()
        sealed = (
            await conn.execute(
                text("SELECT sealed FROM card_verification_values WHERE card_id = :c"), c
            )
        ).scalar_one()
        vaulted = (
            await conn.execute(
                text("SELECT pan_blob, record_blob, pan_hash FROM vault_cards WHERE card_id = :c"),
                c,
            )
        ).one()
    clear_iso0 = Cipher(TripleDES(PIN_3DES), modes.ECB()).decryptor().update(bytes(pins[0]))
    assert pinblock.decode_pinblock_iso_0(clear_iso0, PAN).isdigit()  # the key and PAN fit
    values = {
        "cvv": cvv.generate_cvv(CVK, PAN, EXPIRY, SERVICE_CODE),
        "icvv": cvv.generate_cvv(CVK, PAN, EXPIRY, ICVV_SERVICE_CODE),
        "cvv2": cvv.generate_cvv(CVK, PAN, EXPIRY, CVV2_SERVICE_CODE),
    }
    return [
        pan_secret("PAN", PAN),
        text_secret("cardholder name", LINE["cardholder_name"]),
        text_secret("address line", STREET),
        text_secret("postcode", POSTCODE),
        text_secret("city", CITY),
        *(short_secret(name.upper(), value, name) for name, value in values.items()),
        field_secret("PIN", "pin", "pin_digits", "clear_pin"),
        bytes_secret("clear PIN block", clear_iso0),
        bytes_secret("ISO-0 PIN block", bytes(pins[0])),
        bytes_secret("ISO-4 PIN block", bytes(pins[1])),
        bytes_secret("sealed CVVs", bytes(sealed)),
        bytes_secret("vault PAN blob", bytes(vaulted[0])),
        bytes_secret("vault record blob", bytes(vaulted[1])),
        bytes_secret("PAN hash", bytes(vaulted[2])),
    ]


async def milestone(runtime: ServiceRuntime, card_id: str, column: str) -> None:
    async def noted() -> bool:
        async with runtime.engine.connect() as conn:
            found = await conn.execute(
                text(f"SELECT {column} FROM card_retention WHERE card_id = :c"),  # noqa: S608
                {"c": card_id},
            )
            return found.scalar_one_or_none() is not None

    await wait_for(noted, timeout=60)


async def emitted(settings: KeymgmtSettings, stream: str, kind: str) -> None:
    needle = f'"{kind}"'.encode()
    await collect(
        settings.kafka_bootstrap,
        settings.topic(stream),
        lambda seen: any(needle in r.value for r in seen),
    )


async def to_dispatch(
    settings: KeymgmtSettings, runtime: ServiceRuntime, prepared: events.CardPrepared
) -> None:
    """The card's way from the encoding station to the courier, each step awaited."""
    card, batch, common = prepared.card_id, prepared.batch_id, {"issuer_id": prepared.issuer_id}
    card_id = str(card)
    encoded = events.CardEncoded(
        **common,
        actor="station-a",
        card_id=card,
        batch_id=batch,
        chip_serial="CS" + card.hex[:10].upper(),
        station_id="station-a",
        reader="reader-0",
        apdu_count=12,
    )
    await publish_as(settings, encoded, stream="electrical")
    await emitted(settings, "graphical", "card.printed")
    passed = events.CardQaPassed(
        **common, actor="qa", card_id=card, batch_id=batch, chip_serial=encoded.chip_serial,
        checks=["readback", "arqc"],
    )  # fmt: skip
    await publish_as(settings, passed, stream="qa")
    await emitted(settings, "fulfillment", "card.packed")
    await milestone(runtime, card_id, "personalized_at")
    reconciled = events.BatchReconciled(
        **common, actor="audit", batch_id=batch, counts={"in": 1, "good": 1}
    )
    await publish_as(settings, reconciled, stream="audit")
    await emitted(settings, "fulfillment", "shipment.dispatched")
    await milestone(runtime, card_id, "dispatched_at")


async def scan(
    settings: KeymgmtSettings, runtime: ServiceRuntime, u: str, files: Path, secrets: list[Secret]
) -> list[str]:
    schemas = [runtime.schema, f"intake_{u}", f"graphical_{u}", f"fulfillment_{u}"]
    hits = await table_hits(runtime.engine, schemas, secrets)
    hits += file_hits([files], secrets)
    count, in_topics = await topic_hits(settings.kafka_bootstrap, settings.topic_prefix, secrets)
    assert count >= 8, "the scan read the test's records"
    return hits + in_topics


async def test_nothing_sensitive_of_a_dispatched_card_is_left_after_the_purge(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
    printer: TestPrinter,
    pin_printer: TestPrinter,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for ours in ("services", "shared"):  # every level of our code (not SQLAlchemy's echo)
        caplog.set_level(logging.DEBUG, logger=ours)
    runtime, http = keymgmt
    u, custodian = unique, auth(f"cu-{unique}")
    await load_demo_keys(settings, ISSUER)
    await load_security_keys(runtime, keymgmt_hsm, ISSUER, pin_usage=KeyUsage.ENCRYPT)
    put = await http.put(f"/v1/products/{ISSUER}/debit", json=PROFILE, headers=custodian)
    assert put.status_code == 200, put.text

    files = tmp_path / "services"  # everything the services write goes below it
    async with (
        started_intake(settings, http, u, topic_prefix=settings.topic_prefix) as intake,
        served(build_app(runtime)) as url,
    ):
        ordered = await intake.order(ISSUER, f"purge-{u}", [LINE])
        assert ordered.status_code == 201, ordered.text
        [prepared] = await prepared_events(settings, 1)
        assert isinstance(prepared, events.CardPrepared)
        secrets = await stored_secrets(runtime, str(prepared.card_id))
        graphical = graphical_bootstrap(graphical_for(u, url, printer), schema=f"graphical_{u}")
        fulfillment = fulfillment_bootstrap(
            fulfillment_for(u, url, files), schema=f"fulfillment_{u}"
        )
        async with running(graphical), running(fulfillment):
            await to_dispatch(settings, runtime, prepared)
    assert list(printer.spool.glob("*.prn")), "the card's face was printed"
    assert list(pin_printer.spool.glob("*.prn")), "its PIN mailer was printed"

    before = await scan(settings, runtime, u, files, secrets)
    assert {hit.split(" in ")[1] for hit in before} == {
        f"{runtime.schema}.{place}" for place in KEPT_UNTIL_PURGE
    }, before  # only keymgmt's sealed or encrypted records, until the purge

    # Personalized (QA passed) and its PIN mailer printed: the sensitive authentication data
    # goes at once, the cardholder data stays for the issuer's window (the default, 90 days).
    first = await http.post("/v1/vault/purge", headers=custodian)
    assert first.json() == {"sensitive_authentication_data": 1, "cardholder_data": 0}
    sad_gone = {hit.split(" in ")[1] for hit in await scan(settings, runtime, u, files, secrets)}
    assert sad_gone == {f"{runtime.schema}.vault_cards.{c}" for c in VAULT_COLUMNS}, sad_gone

    window = await http.put(
        f"/v1/vault/retention/{ISSUER}", json={"cardholder_days": 0}, headers=custodian
    )
    assert window.status_code == 200, window.text
    purged = await http.post("/v1/vault/purge", headers=custodian)
    assert purged.json() == {"sensitive_authentication_data": 0, "cardholder_data": 1}

    assert await scan(settings, runtime, u, files, secrets) == []
    assert caplog.records, "the services logged"
    assert log_hits(caplog.records, secrets) == []
    assert await purges_audited(settings) == [
        (prepared.card_id, ("sensitive-authentication-data",)),
        (prepared.card_id, ("cardholder-data",)),
    ]
    await planted_pan_is_found(settings, runtime, u, files, secrets)


async def purges_audited(settings: KeymgmtSettings) -> list[tuple[uuid.UUID, tuple[str, ...]]]:
    """The card.data_purged events keymgmt published, in order (audit logs every event)."""
    records = await collect(
        settings.kafka_bootstrap,
        settings.topic("keymgmt"),
        lambda seen: sum(b'"card.data_purged"' in r.value for r in seen) >= 2,
    )
    decoded = map(events.decode_event, (r.value for r in records))
    return [(e.card_id, tuple(e.purged)) for e in decoded if isinstance(e, events.CardDataPurged)]


async def planted_pan_is_found(
    settings: KeymgmtSettings, runtime: ServiceRuntime, u: str, files: Path, secrets: list[Secret]
) -> None:
    """The scan's own check: the PAN as on the chip (tag 5A, BCD in hex), put in a fulfillment
    column, a file and a record of the test's topics, is reported in each of the three."""
    traced = "5A08" + PAN
    async with runtime.engine.begin() as conn:
        await conn.execute(
            text(f"UPDATE fulfillment_{u}.cards SET carrier_scan = :t"),  # noqa: S608
            {"t": traced},
        )
    (files / "trace.log").write_text(f"APDU 00A4 ... {traced} 9000\n")
    producer = make_producer(settings.kafka_bootstrap, "purge-test")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic("scratch"), bytes.fromhex(traced))
    finally:
        await producer.stop()
    hits = await scan(settings, runtime, u, files, secrets)
    assert f"PAN in fulfillment_{u}.cards.carrier_scan" in hits
    assert f"PAN in {files / 'trace.log'}" in hits
    assert any(hit.startswith(f"PAN in {settings.topic('scratch')}@") for hit in hits), hits
