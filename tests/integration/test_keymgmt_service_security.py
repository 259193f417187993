"""keymgmt on the real stack: an issuer's product profile turns card.ordered into a card
with an HSM-generated PIN (encrypted ISO 9564 blocks + PVV) and CVV/iCVV sealed in the
vault (CVV2 is not stored: nothing reads it); what is stored is checked against psec with
the test-known issuer keys."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from psec import cvv as psec_cvv
from psec import pin as psec_pin
from psec import pinblock
from sqlalchemy import text

from services.keymgmt.emv.card_data import open_card_values
from services.keymgmt.emv.repository import EmvRepository
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremonies import load_demo_keys
from services.keymgmt.settings import KeymgmtSettings
from shared.service import ServiceRuntime
from tests.support.bus import collect
from tests.support.keymgmt import (
    CVK,
    PAN16,
    PIN_3DES,
    PIN_AES,
    PROFILE,
    PVK,
    auth,
    ordered,
    pan_hits,
    prepared_events,
    publish,
    vault,
)
from tests.support.retention import issuer_with_products

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]


async def test_product_profile_gives_pin_blocks_pvv_and_sealed_cvvs(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
) -> None:
    runtime, http = keymgmt
    other = f"ib{unique}"
    products = {"visa-classic": PROFILE}
    issuer, _ = await issuer_with_products(settings, keymgmt, keymgmt_hsm, unique, products)
    path = f"/v1/products/{issuer}/visa-classic"
    refused = await http.put(path, json=PROFILE, headers=auth(f"ia-{unique}"))
    own = await http.get(path, headers=auth(f"ia-{unique}"))
    foreign = await http.get(path, headers=auth(f"ib-{unique}"))
    assert (refused.status_code, own.status_code, foreign.status_code) == (403, 200, 404)
    assert own.json()["pin_verification"] == "visa-pvv"

    card = await vault(http, unique, issuer)
    await publish(settings, ordered(card, issuer))
    assert len(await prepared_events(settings, 1)) == 1
    async with runtime.engine.connect() as conn:
        pin_row = await EmvRepository(conn).card_pin(card["card_id"])
        values_row = await EmvRepository(conn).card_values(card["card_id"])
    assert pin_row is not None
    assert values_row is not None
    clear0 = Cipher(TripleDES(PIN_3DES), modes.ECB()).decryptor().update(pin_row["iso0_block"])
    pin = pinblock.decode_pinblock_iso_0(clear0, PAN16)
    assert pinblock.decipher_pinblock_iso_4(PIN_AES, pin_row["iso4_block"], PAN16) == pin
    assert pin_row["pvki"] == "2"
    assert pin_row["pvv"] == psec_pin.generate_visa_pvv(PVK, "2", pin, PAN16)
    assert pin_row["iso0_key_label"] == f"{issuer}/PIN-3DES/1"
    values = await keymgmt_hsm.call(open_card_values, values_row)
    assert values == {
        "cvv": psec_cvv.generate_cvv(CVK, PAN16, "2812", "201"),
        "icvv": psec_cvv.generate_cvv(CVK, PAN16, "2812", "999"),
    }, "CVV2 is not stored: nothing reads it"
    assert await pan_hits(runtime, [PAN16]) == []
    async with runtime.engine.connect() as conn:  # the clear format 0 block is nowhere
        found = await conn.execute(
            text("SELECT count(*) FROM card_pins WHERE position(:b in iso0_block) > 0"),
            {"b": clear0},
        )
        assert found.scalar_one() == 0

    mailer = await http.get(f"/v1/cards/{card['card_id']}/pin", headers=auth(f"fu-{unique}"))
    not_graphical = await http.get(f"/v1/cards/{card['card_id']}/pin", headers=auth(f"gr-{unique}"))
    assert not_graphical.status_code == 403
    blocks = {b["format"]: b for b in mailer.json()["pin_blocks"]}
    assert blocks["ISO-9564-1-FORMAT-4"]["block"] == bytes(pin_row["iso4_block"]).hex().upper()

    # An issuer whose product asks for a PIN but who has no PIN keys: dead-lettered.
    await load_demo_keys(settings, other)
    no_keys = {"pin_formats": ["ISO-9564-1-FORMAT-0"]}
    await http.put(f"/v1/products/{other}/visa-classic", json=no_keys, headers=auth(f"cu-{unique}"))
    stray = await vault(http, unique, other)
    await publish(settings, ordered(stray, other))
    dead = await collect(settings.kafka_bootstrap, settings.topic("dlq"), lambda s: len(s) >= 1)
    reason = dict(dead[0].headers)["dlq.reason"].decode()
    assert f"keys not active: {other}/PIN-3DES/1" in reason
