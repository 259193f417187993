"""A batch with injected faults through every service, the real IPP printers and real pcscd:
a card with wrong keys (the feeder's wrong factory KMC), a bad print (the card printer prints
another face once) and a carrier mismatch (the inserter feeds another card's letter once).
Those cards end destroyed under dual control (two operators), the good ones are dispatched
with their PIN mailers in a separate shipment, and audit reconciles the batch with zero
discrepancy. The PIN (12 digits, decrypted here with the test-known PIN key) is nowhere
outside keymgmt: not in Kafka, logs, tables, the fulfillment service's files, nor the PIN
printer's spool."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from psec import pinblock
from sqlalchemy import text

from demo.client import Bureau, demo_cards
from services.fulfillment.carrier import CarrierLetter, render_carrier
from services.fulfillment.inserter import Inserter
from services.graphical.render import FaceRenderer
from services.graphical.service import FaceData, default_design
from services.graphical.settings import DEJAVU_SANS
from shared.db import make_engine
from tests.conftest import REPO
from tests.support.stack_dump import database_dump, kafka_records

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

ISSUER, PRODUCT = "e2e-faults", "e2e-faults-debit"
PIN_3DES = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")  # test key, two demo custodians
CARDS = 8
FEEDER = "http://127.0.0.1:8110"
KEYMGMT, FULFILLMENT = "http://127.0.0.1:8102", "http://127.0.0.1:8106"

IMPORT_PIN_KEY = f"""
import asyncio
from services.keymgmt.keys.ceremony import CeremonyKeyType, KeyUsage
from services.keymgmt.keys.ceremonies import CeremonySpec, run_demo_ceremony
from services.keymgmt.keys.repository import KeysRepository
from services.keymgmt.settings import MIGRATIONS, KeymgmtSettings
from services.keymgmt.hsm.process import process_hsm
from shared.db import make_engine, migrate

async def main():
    settings = KeymgmtSettings()
    engine = make_engine(settings.database_url, settings.keymgmt_schema)
    await migrate(engine, settings.keymgmt_schema, MIGRATIONS)
    label = "{ISSUER}/PIN-3DES/1"
    async with engine.connect() as conn:
        known = await KeysRepository(conn).key(label)
    if known is None:
        spec = CeremonySpec(label, "{ISSUER}", CeremonyKeyType.DES2, KeyUsage.ENCRYPT, 2, "e2e")
        async with process_hsm(settings) as hsm:
            await run_demo_ceremony(engine, hsm, spec, "{PIN_3DES.hex()}", "31" * 16)
    await engine.dispose()

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def pin_key(e2e_env: dict[str, str]) -> None:
    """The issuer's PIN key, decryptable for PIN mailers; before the services start."""
    subprocess.run(
        [sys.executable, "-c", IMPORT_PIN_KEY], env=e2e_env, cwd=REPO, check=True, timeout=120
    )


def run_dir(env: dict[str, str]) -> Path:
    return Path(env.get("BUREAU_RUN_DIR", REPO / ".run"))


async def arm_faults(http: httpx.AsyncClient, env: dict[str, str]) -> None:
    """One fault of each kind, each for the next card that meets it."""
    first = (await http.get(f"{FEEDER}/readers")).json()["readers"][0]
    name = quote(str(first["name"]), safe="")
    armed = await http.post(f"{FEEDER}/readers/{name}/faults", json={"wrong_kmc": True})
    assert armed.status_code == 200, armed.text
    # The blank already in the reader goes out: the next one, with the wrong keys, comes in.
    assert (await http.post(f"{FEEDER}/readers/{name}/eject", json={})).status_code == 200
    wrong_face = FaceRenderer(DEJAVU_SANS).render(
        default_design(ISSUER), FaceData("SOMEONE ELSE ENTIRELY", "411111******1111", "2812")
    )
    printer = run_dir(env) / "printers" / "card"
    (printer / "misprint.partial").write_bytes(wrong_face)
    os.replace(printer / "misprint.partial", printer / "misprint")
    stray = CarrierLetter(uuid.uuid4(), "0000DEADBEEF", "CR-STRAY", "NOBODY", ("Nowhere",), ISSUER)
    Inserter(run_dir(env) / "fulfillment" / "inserter").misfeed(render_carrier(stray))


def disarm(env: dict[str, str]) -> None:
    """Faults not consumed (a failed run) must not hit the next batch on this stack."""
    (run_dir(env) / "printers" / "card" / "misprint").unlink(missing_ok=True)
    (run_dir(env) / "fulfillment" / "inserter" / "misfeed").unlink(missing_ok=True)


async def fulfillment_view(http: httpx.AsyncClient, batch: str, token: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    answer = await http.get(f"{FULFILLMENT}/v1/batches/{batch}", headers=headers)
    if answer.status_code == 404:
        return {}
    answer.raise_for_status()
    view: dict[str, Any] = answer.json()
    return view


async def pins_of(env: dict[str, str], pans: dict[str, str]) -> list[str]:
    """The cards' clear PINs, recovered from keymgmt's stored blocks with the test PIN key
    (ISO 9564-1 format 0, decoded by psec: an independent implementation)."""
    engine = make_engine(env["BUREAU_DATABASE_URL"], "keymgmt")
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT card_id, iso0_block FROM keymgmt.card_pins"
                        " WHERE CAST(card_id AS text) = ANY(:ids)"
                    ),
                    {"ids": list(pans)},
                )
            ).all()
    finally:
        await engine.dispose()
    decrypt = Cipher(TripleDES(PIN_3DES), modes.ECB()).decryptor
    return [
        pinblock.decode_pinblock_iso_0(decrypt().update(bytes(block)), pans[str(card_id)])
        for card_id, block in rows
    ]


@pytest.fixture
def faults_disarmed(e2e_env: dict[str, str]) -> Iterator[None]:
    disarm(e2e_env)
    yield
    disarm(e2e_env)


async def test_faulty_cards_are_destroyed_good_ones_dispatched_pins_stay_in_keymgmt(
    pin_key: None, bureau: Bureau, e2e_env: dict[str, str], faults_disarmed: None
) -> None:
    token = await bureau.onboard_issuer(ISSUER, "E2E Faults", PRODUCT)
    await bureau.receive_stock(ISSUER, PRODUCT, CARDS)
    admin = {"Authorization": f"Bearer {bureau.tokens.admin}"}
    operator = {"Authorization": f"Bearer {bureau.tokens.operator}"}
    async with httpx.AsyncClient(timeout=60) as http:
        profile = {"pin_length": 12, "pin_formats": ["ISO-9564-1-FORMAT-0"], "emv": {}}
        put = await http.put(
            f"{KEYMGMT}/v1/products/{ISSUER}/{PRODUCT}", json=profile, headers=admin
        )
        assert put.status_code == 200, put.text
        await arm_faults(http, e2e_env)
        cards = demo_cards(CARDS, seed=int.from_bytes(os.urandom(4), "big"))
        order = await bureau.post_order(token, PRODUCT, cards)
        batch = str(order["batch_id"])
        card_ids = {c["card_id"] for c in order["cards"]}

        deadline = asyncio.get_running_loop().time() + 300
        view: dict[str, Any] = {}
        while asyncio.get_running_loop().time() < deadline:
            view = await fulfillment_view(http, batch, bureau.tokens.operator)
            done = len(view.get("packed", [])) + len(view.get("awaiting_destruction", []))
            if done == CARDS:
                break
            await asyncio.sleep(1.0)
        assert len(view["awaiting_destruction"]) == 3, view
        rejects = view["awaiting_destruction"]
        reasons = []
        for card_id in rejects:
            found = await bureau.events_of_card(card_id)
            rejected = [e for e in found if e["type"] in ("card.spoiled", "card.qa_failed")]
            # The misfed card passed QA: only fulfillment knows why it was not packed.
            reasons.append(rejected[0]["payload"]["reason"] if rejected else "not packed")
        reasons.sort()
        assert len([r for r in reasons if r.startswith("print-image: the printed face")]) == 1
        assert reasons.count("not packed") == 1, reasons
        assert len([r for r in reasons if "print-image" not in r and r != "not packed"]) == 1

        # Dual control: one operator asks, a second confirms with their own token.
        asked = await http.post(
            f"{FULFILLMENT}/v1/destructions", json={"card_ids": rejects}, headers=operator
        )
        assert asked.status_code == 201, asked.text
        confirm = f"{FULFILLMENT}/v1/destructions/{asked.json()['destruction_id']}/confirm"
        assert (await http.post(confirm, headers=operator)).status_code == 403  # the same one
        second = {"Authorization": f"Bearer {bureau.tokens.second_operator}"}
        done_destroying = await http.post(confirm, headers=second)
        assert done_destroying.status_code == 200, done_destroying.text

        closed = await bureau.wait_for_batch(batch, {"closed", "held"}, timeout=300)
        assert closed["status"] == "closed", closed
        assert closed["problems"] == []
        assert all(not ids for ids in closed["missing"].values())

        view = await fulfillment_view(http, batch, bureau.tokens.operator)
    good = card_ids - set(rejects)
    assert set(view["dispatched"]) == good
    assert set(view["destroyed"]) == set(rejects)
    async with bureau._client(bureau.urls.audit, bureau.tokens.auditor) as auditor:
        log = (await auditor.get("/v1/events", params={"batch_id": batch, "limit": 500})).json()
    shipments = [e["payload"] for e in log["events"] if e["type"] == "shipment.dispatched"]
    by_kind = {s["kind"]: s for s in shipments}
    assert set(by_kind["cards"]["card_ids"]) == good
    assert set(by_kind["pin_mailers"]["card_ids"]) == good
    for shipment in shipments:  # a shipment is all cards or all PIN mailers, never both
        assert shipment["kind"] in ("cards", "pin_mailers")
    assert by_kind["cards"]["shipment_id"] != by_kind["pin_mailers"]["shipment_id"]
    destroyed = [e["payload"] for e in log["events"] if e["type"] == "card.destroyed"]
    assert {d["card_id"] for d in destroyed} == set(rejects)
    assert all(len(set(d["witnesses"])) == 2 for d in destroyed)

    # The PINs: recovered here from keymgmt's blocks with the test key, looked for elsewhere.
    pans = {str(c["card_id"]): cards[int(c["sequence"])]["pan"] for c in order["cards"]}
    for summary in order["cards"]:  # the sequence is the card's line in the order
        assert pans[str(summary["card_id"])][-4:] == summary["masked_pan"][-4:]
    pins = await pins_of(e2e_env, pans)
    assert len(pins) == CARDS
    assert all(len(p) == 12 for p in pins)
    destroyed_reasons = " ".join(d["reason"] for d in destroyed)
    assert "fulfillment: carrier mismatch" in destroyed_reasons
    records = await kafka_records(e2e_env["BUREAU_KAFKA_BOOTSTRAP"], e2e_env["BUREAU_TOPIC_PREFIX"])
    blobs = [bytes(r.value or b"") + bytes(r.key or b"") for r in records]
    assert not [p for p in pins if any(p.encode() in blob for blob in blobs)], "PIN in Kafka"
    run = run_dir(e2e_env)
    files = [
        p
        for root in (run / "logs", run / "fulfillment", run / "printers" / "pin")
        if root.exists()
        for p in root.rglob("*")
        if p.is_file()
    ]
    for path in files:
        content = path.read_bytes()
        assert not [p for p in pins if p.encode() in content], f"PIN in {path}"
    assert not list((run / "printers" / "pin" / "spool").rglob("*.png")), "PIN printer kept a job"
    dump = await asyncio.to_thread(database_dump, e2e_env["BUREAU_DATABASE_URL"])
    assert ISSUER in dump
    assert not [p for p in pins if p in dump], "PIN in a database table"
