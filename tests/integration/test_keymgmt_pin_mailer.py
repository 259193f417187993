"""PIN mailers on the real stack: keymgmt decrypts the card's PIN block in SoftHSM, prints the
mailer on a real IPP printer (ippeveprinter) and tells fulfillment only the mailer's state.
The printed mailer is checked against one laid out with the PIN psec recovers from the stored
block (an independent oracle), and the PIN is nowhere in keymgmt's answers or tables."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from psec import pinblock

from services.keymgmt.emv.repository import EmvRepository
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremonies import load_demo_keys
from services.keymgmt.keys.ceremony import KeyUsage
from services.keymgmt.pin_mailer.service import MailerText, pin_from_iso4, render_pin_mailer
from services.keymgmt.settings import KeymgmtSettings
from services.qa.print_check import compare_prints
from shared.service import ServiceRuntime
from tests.support.keymgmt import (
    PAN16,
    PIN_3DES,
    auth,
    load_security_keys,
    ordered,
    pan_hits,
    prepared_events,
    publish,
    vault,
)
from tests.support.printer import TestPrinter
from tests.support.tls import TestCa

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

PROFILE = {"pin_length": 4, "pin_formats": ["ISO-9564-1-FORMAT-0", "ISO-9564-1-FORMAT-4"]}


async def issued_card(
    config: KeymgmtSettings, runtime: ServiceRuntime, http: Any, hsm: Hsm, issuer: str, u: str
) -> dict[str, Any]:
    await load_demo_keys(config, issuer)
    await load_security_keys(runtime, hsm, issuer, pin_usage=KeyUsage.ENCRYPT)
    put = await http.put(
        f"/v1/products/{issuer}/visa-classic", json=PROFILE, headers=auth(f"cu-{u}")
    )
    assert put.status_code == 200, put.text
    card: dict[str, Any] = await vault(http, u, issuer)
    await publish(config, ordered(card, issuer))
    assert len(await prepared_events(config, 1)) == 1
    return card


async def test_pin_mailer_is_printed_once_from_the_encrypted_block_and_shows_the_pin(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
    pin_printer: TestPrinter,
) -> None:
    runtime, http = keymgmt
    issuer = f"ia{unique}"
    card = await issued_card(settings, runtime, http, keymgmt_hsm, issuer, unique)
    card_id = card["card_id"]
    body = {"card_id": card_id, "batch_id": str(uuid.uuid4())}

    refused = await http.post("/v1/pin-mailers", json=body, headers=auth(f"gr-{unique}"))
    assert refused.status_code == 403
    first = await http.post("/v1/pin-mailers", json=body, headers=auth(f"fu-{unique}"))
    again = await http.post("/v1/pin-mailers", json=body, headers=auth(f"fu-{unique}"))
    state = await http.get(f"/v1/pin-mailers/{card_id}", headers=auth(f"fu-{unique}"))
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "printed"
    assert again.json() == first.json() == state.json()
    assert set(first.json()) == {
        "mailer_id",
        "card_id",
        "status",
        "ipp_job_id",
        "attempts",
        "last_problem",
    }
    mailer_id = first.json()["mailer_id"]
    [output] = pin_printer.outputs(f"pin-{mailer_id}")  # one job: the second call printed nothing

    async with runtime.engine.connect() as conn:
        pin_row = await EmvRepository(conn).card_pin(uuid.UUID(card_id))
    assert pin_row is not None
    clear = Cipher(TripleDES(PIN_3DES), modes.ECB()).decryptor().update(pin_row["iso0_block"])
    pin = pinblock.decode_pinblock_iso_0(clear, PAN16)  # the oracle: psec, the test-known key
    # Format 4, decrypted by keymgmt's own path, gives the same PIN.
    label, block = pin_row["iso4_key_label"], bytes(pin_row["iso4_block"])
    four = await keymgmt_hsm.call(pin_from_iso4, label, block, PAN16)
    assert "".join(map(str, four)) == pin

    address = ("1 Test Street", "T1 1ST Testville", "GB")  # test_keymgmt_service.ADDRESS
    expected = MailerText(issuer, "DOE/JANE", address, PAN16[-4:])
    digits = bytearray(int(d) for d in pin)
    assert compare_prints(render_pin_mailer(expected, digits), output.read_bytes()) is None
    wrong = bytearray((d + 1) % 10 for d in digits)
    assert compare_prints(render_pin_mailer(expected, wrong), output.read_bytes()) is not None

    for answer in (first, again, state):
        assert pin not in answer.text
    async with runtime.engine.connect() as conn:
        hits = await pan_hits(runtime, [pin])  # any column holding the PIN's digits
    assert not [h for h in hits if h.startswith("pin_mailers.")]


async def test_no_pin_means_no_mailer_and_an_encrypt_only_key_is_a_clear_refusal(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
    pin_printer: TestPrinter,
) -> None:
    runtime, http = keymgmt
    issuer = f"ib{unique}"
    await load_demo_keys(settings, issuer)
    await load_security_keys(runtime, keymgmt_hsm, issuer)  # PIN keys `encrypt_only`
    no_pin = await vault(http, unique, issuer)
    body = {"card_id": no_pin["card_id"], "batch_id": str(uuid.uuid4())}
    missing = await http.post("/v1/pin-mailers", json=body, headers=auth(f"fu-{unique}"))
    assert missing.status_code == 404

    put = await http.put(
        f"/v1/products/{issuer}/visa-classic", json=PROFILE, headers=auth(f"cu-{unique}")
    )
    assert put.status_code == 200
    card = await vault(http, unique, issuer)
    await publish(settings, ordered(card, issuer))
    assert len(await prepared_events(settings, 1)) == 1
    body = {"card_id": card["card_id"], "batch_id": str(uuid.uuid4())}
    refused = await http.post("/v1/pin-mailers", json=body, headers=auth(f"fu-{unique}"))
    assert refused.status_code == 409
    assert "usage 'encrypt'" in refused.json()["detail"]
    assert not list(pin_printer.spool.iterdir())  # nothing reached the printer


async def test_a_pin_printer_whose_certificate_does_not_verify_gets_no_mailer(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
    pin_printer: TestPrinter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The configured CA is another one than the printer's: keymgmt refuses the printer (503
    naming the certificate), the printer receives nothing, and the mailer can be asked again."""
    monkeypatch.setenv("BUREAU_PIN_PRINTER_CA", str(TestCa.create(tmp_path / "other").cert_file))
    runtime, http = keymgmt
    issuer = f"ic{unique}"
    card = await issued_card(settings, runtime, http, keymgmt_hsm, issuer, unique)
    body = {"card_id": card["card_id"], "batch_id": str(uuid.uuid4())}
    refused = await http.post("/v1/pin-mailers", json=body, headers=auth(f"fu-{unique}"))
    assert refused.status_code == 503, refused.text
    assert "TLS certificate does not verify" in refused.json()["detail"]
    assert not list(pin_printer.spool.iterdir())
