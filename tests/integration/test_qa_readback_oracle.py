"""QA's read-back is no PAN oracle (issue 16), tried on real keymgmt (Postgres, SoftHSM, a
virtual chip personalized by keymgmt's own script). The attack that once recovered a PAN's
middle digits (submit records with a guessed PAN until the answer stops naming tag 5A) now
meets: answers only for a card in QA on its chip, at the station that began its QA, three
read-backs per card, and pass/fail with reason codes that name no field and no value."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.keymgmt.emv.readback import READBACK_LIMIT
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremonies import load_demo_keys
from services.keymgmt.settings import KeymgmtSettings
from shared.keymgmt.contract import ReadbackProblem
from shared.pan import luhn_valid
from shared.service import ServiceRuntime
from tests.support.keymgmt import PAN16, auth, ordered, prepared_events, publish, vault
from tests.support.keymgmt_emv import emv_product
from tests.support.perso_chip import new_chip, personalize, read_records
from vcard.card import VirtualCard
from vcard.store import CardStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]
CODES = {p.value for p in ReadbackProblem}


async def card_in_qa(
    settings: KeymgmtSettings,
    keymgmt: tuple[ServiceRuntime, Any],
    hsm: Hsm,
    unique: str,
    tmp_path: Path,
) -> tuple[str, VirtualCard, dict[str, str]]:
    """A card of a full-profile product vaulted, prepared and personalized on a virtual chip;
    the chip's AFL records."""
    runtime, http = keymgmt
    issuer = f"io{unique}"
    await load_demo_keys(settings, issuer)
    await emv_product(http, runtime, hsm, unique, issuer)
    card = await vault(http, unique, issuer)
    await publish(settings, ordered(card, issuer))
    assert len(await prepared_events(settings, 1)) == 1
    chip = new_chip(CardStore(tmp_path))
    await personalize(http, f"st-{unique}", card["card_id"], chip)
    return card["card_id"], chip, read_records(chip)


def guess(records: dict[str, str], pan: str) -> dict[str, str]:
    """The chip's records with another PAN in place of the real one (5A and track 2)."""
    return {n: v.upper().replace(PAN16, pan) for n, v in records.items()}


async def readback(http: httpx.AsyncClient, unique: str, body: dict[str, Any]) -> httpx.Response:
    return await http.post("/v1/qa/readback", json=body, headers=auth(f"qa-{unique}"))


async def test_guessing_a_pans_digits_through_readback_fails(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
    tmp_path: Path,
) -> None:
    _, http = keymgmt
    card_id, chip, records = await card_in_qa(settings, keymgmt, keymgmt_hsm, unique, tmp_path)
    base = {"card_id": card_id, "chip_serial": chip.chip_serial, "qa_station": "qa-1"}
    # The attacker holds every byte but the PAN's middle six digits (the masked PAN shows the
    # rest) and tries Luhn-valid PANs in turn, the true one as the 20th guess.
    candidates = (f"{PAN16[:6]}{m:06d}{PAN16[-4:]}" for m in range(900_000, 901_000))
    guesses = [g for g in candidates if luhn_valid(g) and g != PAN16][:40]
    guesses.insert(19, PAN16)
    answers = [await readback(http, unique, base | {"records": guess(records, g)}) for g in guesses]

    verdicts = [a.json() for a in answers if a.status_code == 200]
    assert len(verdicts) == READBACK_LIMIT  # three answers for the card, ever
    assert all(v == {"ok": False, "problems": ["records-differ"]} for v in verdicts)
    refused = answers[READBACK_LIMIT:]
    assert {a.status_code for a in refused} == {409}
    assert {a.headers["x-bureau-refusal"] for a in refused} == {"readback-limit-reached"}
    true_guess = answers[19]
    assert true_guess.status_code == 409  # the right PAN never got a verdict
    for answer in answers:  # nothing names a field, a tag or a digit of the PAN
        for leak in ("5A", "PAN", "tag", PAN16[6:12], PAN16):
            assert leak not in answer.text

    # The real records are refused now too: the card has had its read-backs.
    assert (await readback(http, unique, base | {"records": records})).status_code == 409


async def test_readback_answers_only_for_a_card_in_qa_on_its_chip_at_its_station(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
    tmp_path: Path,
) -> None:
    _, http = keymgmt
    card_id, chip, records = await card_in_qa(settings, keymgmt, keymgmt_hsm, unique, tmp_path)
    body = {"card_id": card_id, "chip_serial": chip.chip_serial, "qa_station": "qa-1"}

    # Not personalized: a vaulted, prepared card without a chip, and an unknown card.
    issuer = f"io{unique}"
    loose = await vault(http, unique, issuer)
    await publish(settings, ordered(loose, issuer))
    await prepared_events(settings, 2)
    for other in (loose["card_id"], str(uuid.uuid4())):
        answer = await readback(http, unique, body | {"card_id": other, "records": records})
        assert answer.status_code == 409, answer.text
        assert answer.headers["x-bureau-refusal"] == "card-not-in-qa"
    wrong_chip = await readback(
        http, unique, body | {"chip_serial": "0123456789AB", "records": records}
    )
    assert wrong_chip.status_code == 409
    assert wrong_chip.headers["x-bureau-refusal"] == "card-not-in-qa"

    clean = await readback(http, unique, body | {"records": records})
    assert clean.json() == {"ok": True, "problems": []}  # QA itself still gets its answer
    elsewhere = await readback(http, unique, body | {"qa_station": "qa-2", "records": records})
    assert elsewhere.status_code == 409
    assert elsewhere.headers["x-bureau-refusal"] == "card-in-qa-elsewhere"
    malformed = await readback(http, unique, body | {"records": {"0101": "70" * 200 + "00"}})
    assert malformed.json()["problems"] == sorted(
        [ReadbackProblem.RECORD_MALFORMED, ReadbackProblem.RECORD_MISSING]
    )
    assert set(malformed.json()["problems"]) <= CODES


async def test_deeply_nested_records_are_a_verdict_not_a_500(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
    tmp_path: Path,
) -> None:
    """1,200 nested templates once raised RecursionError (a 500); the contract bounds a record
    to 1024 bytes, and inside that a deep record is a `record-malformed` verdict."""
    _, http = keymgmt
    card_id, chip, records = await card_in_qa(settings, keymgmt, keymgmt_hsm, unique, tmp_path)
    body = {"card_id": card_id, "chip_serial": chip.chip_serial, "qa_station": "qa-1"}
    huge = "".join(f"7082{4 * (1200 - i - 1):04X}" for i in range(1200))  # 1,200 nested
    too_big = await readback(http, unique, body | {"records": records | {"0101": huge}})
    assert too_big.status_code == 422
    deep = "".join(f"70{2 * (60 - i - 1):02X}" for i in range(60))  # 60 nested, 120 bytes
    nested = await readback(http, unique, body | {"records": records | {"0101": deep}})
    assert nested.status_code == 200, nested.text
    assert nested.json() == {"ok": False, "problems": ["record-malformed"]}
