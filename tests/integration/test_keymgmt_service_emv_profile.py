"""keymgmt on the real stack (Postgres, Kafka, SoftHSM) with a full EMV profile: the product's
profile validated by the API, a batch held while its ODA keys are missing (the missing key
named) and prepared once they are loaded, the issuer certificate import refused for each bad
certificate, and the prepared card's script: its offline PIN (DGI 8010) is the PIN of its PIN
block (psec), its ODA data verifies with the test CA (tests/support/oda_terminal.py). Once the
card ends (cancelled), the purge deletes its wrapped offline PIN with its PIN blocks."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import date
from typing import Any

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
from psec import cvv as psec_cvv
from psec import pinblock
from pyemv.tlv import decode
from sqlalchemy import text

from services.keymgmt.app import bootstrap
from services.keymgmt.emv.card_rows import emv_card_rows
from services.keymgmt.emv.key_checks import product_key_problems
from services.keymgmt.emv.service import build_card_script, imks_of
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremonies import load_demo_keys
from services.keymgmt.repository import KeymgmtRepository
from services.keymgmt.settings import KeymgmtSettings
from shared import events
from shared.service import ServiceRuntime
from tests.conftest import running
from tests.support.bus import collect, records_of, wait_for
from tests.support.keymgmt import PAN16, PIN_3DES, auth, ordered, prepared_events, publish, vault
from tests.support.keymgmt_emv import CVK, EMV_PRODUCT, load_oda_keys, load_pin_and_cvv_keys
from tests.support.oda_terminal import public_key, recover_icc_key, recover_issuer_key, verify_sda
from tests.support.retention import milestone, rows_of

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

DIV = bytes.fromhex("434256430A0B0C0D0001")
KMC = bytes.fromhex("404142434445464748494A4B4C4D4E4F")  # the demo KMC (ceremonies.DEMO_KMC)
PIN_TABLES = ("card_pins", "card_offline_pins")  # the online and the offline PIN blocks


async def _problems(runtime: ServiceRuntime, hsm: Hsm, issuer: str, kmc: str) -> list[str]:
    async with runtime.engine.connect() as conn:
        repo = KeymgmtRepository(conn)
        profile = await repo.emv.product(issuer, "visa-classic")
        assert profile is not None
        return await product_key_problems(repo, hsm, issuer, profile, kmc, date.today())


async def test_emv_profile_card_held_then_prepared_with_its_offline_pin_and_oda(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
) -> None:
    runtime, http = keymgmt
    issuer, cu = f"ia{unique}", auth(f"cu-{unique}")
    await load_demo_keys(settings, issuer)
    await load_pin_and_cvv_keys(runtime, keymgmt_hsm, issuer)
    path = f"/v1/products/{issuer}/visa-classic"
    bad = await http.put(path, json=EMV_PRODUCT | {"emv": {"cdol1": "9F0205"}}, headers=cu)
    assert bad.status_code == 422
    assert "cdol1" in bad.text
    assert "9F02 must have length 6" in bad.text
    assert (await http.put(path, json=EMV_PRODUCT, headers=cu)).status_code == 200

    # No issuer RSA key, certificate nor pool yet: the card is held, the missing piece named.
    problems = await _problems(runtime, keymgmt_hsm, issuer, settings.kmc_label)
    assert problems == [f"issuer certificate for {issuer}/ISSRSA/1 is missing: import it"]
    card = await vault(http, unique, issuer)
    await publish(settings, ordered(card, issuer))
    with pytest.raises(TimeoutError):  # no card.prepared while the product is held
        await collect(
            settings.kafka_bootstrap, settings.topic("keymgmt"), records_of("card.prepared", 1), 3.0
        )

    # The bureau's test CA signs the issuer key; the pool is filled: the held card goes on.
    ca = await load_oda_keys(http, unique, issuer, 3)
    assert await _problems(runtime, keymgmt_hsm, issuer, settings.kmc_label) == []
    [prepared] = await prepared_events(settings, 1)
    assert prepared.type == "card.prepared"
    assert (await http.get("/v1/icc-pool", headers=cu)).json() == {"free": 2}

    card_id = uuid.UUID(card["card_id"])
    async with runtime.engine.connect() as conn:
        repo = KeymgmtRepository(conn)
        rows = await emv_card_rows(repo, card_id, issuer, "visa-classic")
        vaulted = await repo.vault.vault_card(card_id)
        pin_row = await repo.emv.card_pin(card_id)
    assert rows is not None
    assert vaulted is not None
    assert pin_row is not None
    script = await keymgmt_hsm.call(
        build_card_script, vaulted, DIV, imks_of(issuer), settings.kmc_label, "201", rows
    )
    dgis = _dgis(list(script.apdus[1:]))
    k_dek = _ecb(KMC, DIV[4:10] + b"\xf0\x03" + DIV[4:10] + b"\x0f\x03")
    clear0 = Cipher(TripleDES(PIN_3DES), modes.ECB()).decryptor().update(pin_row["iso0_block"])
    pin = pinblock.decode_pinblock_iso_0(clear0, PAN16)
    offline = _ecb(k_dek, dgis["8010"], decrypt=True)
    assert offline == bytes.fromhex(f"24{pin}FFFFFFFFFF8000000000000000")
    assert aes_key_unwrap_with_padding(k_dek, dgis["8201"])[:2] == b"\x30\x82"

    records = {
        t: v for n, d in dgis.items() if n[:2] in ("01", "02") for t, v in decode(d)["70"].items()
    }
    static = _value(dgis["0201"]) + decode(dgis["9104"])["82"]
    trusted = await http.get("/v1/ca-keys/A000000003/92", headers=auth(f"qa-{unique}"))
    assert trusted.json()["modulus"] == ca["modulus"]  # what QA's terminal checks use
    assert (
        await http.get("/v1/ca-keys/A000000003/93", headers=auth(f"qa-{unique}"))
    ).status_code == 404
    ca_key = public_key(bytes.fromhex(trusted.json()["modulus"]), b"\x03")
    ipk = recover_issuer_key(records["90"], records.get("92", b""), records["9F32"], ca_key)
    issuer_key = public_key(ipk.modulus, ipk.exponent)
    verify_sda(records["93"], static, issuer_key)
    recover_icc_key(records["9F46"], records.get("9F48", b""), records["9F47"], static, issuer_key)
    icvv = psec_cvv.generate_cvv(CVK, PAN16, "2812", "999")  # iCVV: service code 999
    assert records["57"].hex().upper() == f"{PAN16}D281220100000{icvv}"

    assert await rows_of(runtime, card_id, PIN_TABLES) == {"card_pins": 1, "card_offline_pins": 1}
    cancelled = events.CardCancelled(
        issuer_id=issuer,
        actor="intake",
        card_id=card_id,
        batch_id=uuid.uuid4(),  # keymgmt goes by the card
        order_id=uuid.uuid4(),
        reason="issuer cancelled",
    )
    await publish(settings, cancelled)
    await milestone(runtime, card_id, "finished_at")
    purged = await http.post("/v1/vault/purge", headers=cu)
    assert purged.json()["sensitive_authentication_data"] == 1, purged.text
    assert await rows_of(runtime, card_id, PIN_TABLES) == {"card_pins": 0, "card_offline_pins": 0}


def _value(template: bytes) -> bytes:
    return template[2:] if template[1] < 0x80 else template[2 + (template[1] & 0x7F) :]


def _ecb(key: bytes, data: bytes, decrypt: bool = False) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.ECB())
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


def _dgis(apdus: list[bytes]) -> dict[str, bytes]:
    """DGIs reassembled from STORE DATA data fields (EMV CPS v1.1 §3.2.7.4)."""
    stream = b"".join(a[5 : 5 + a[4]] for a in apdus)
    out, pos = {}, 0
    while pos < len(stream):
        tag, length, pos = stream[pos : pos + 2].hex().upper(), stream[pos + 2], pos + 3
        if length == 0xFF:
            length, pos = int.from_bytes(stream[pos : pos + 2], "big"), pos + 2
        out[tag], pos = stream[pos : pos + length], pos + length
    return out


def _scheme_certificate(ca: rsa.RSAPrivateKey, modulus: bytes, mmyy: str) -> tuple[str, str]:
    """An issuer certificate as a scheme CA signs it (Book 2 Table 6), built here."""
    n_ca = ca.key_size // 8
    left, rest = modulus[: n_ca - 36], modulus[n_ca - 36 :]
    body = bytes.fromhex(f"02476173FF{mmyy}0000010101") + bytes([len(modulus), 1]) + left
    block = b"\x6a" + body + hashlib.sha1(body + rest + b"\x03").digest() + b"\xbc"
    numbers = ca.private_numbers()
    sig = pow(int.from_bytes(block, "big"), numbers.d, numbers.public_numbers.n)
    return sig.to_bytes(n_ca, "big").hex(), rest.hex()


async def test_issuer_certificate_import_refusals(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
) -> None:
    _, http = keymgmt
    issuer, cu = f"ib{unique}", auth(f"cu-{unique}")
    scheme = await asyncio.to_thread(rsa.generate_private_key, 3, 1408)
    n = scheme.public_key().public_numbers().n.to_bytes(176, "big")
    trust = {"modulus": n.hex(), "exponent": "03", "expires": "2031-12-31"}
    assert (await http.put("/v1/ca-keys/A000000099/01", json=trust, headers=cu)).status_code == 200
    key = await http.post(f"/v1/issuers/{issuer}/issuer-key", headers=cu)
    modulus = bytes.fromhex(key.json()["modulus"])
    url = f"/v1/issuers/{issuer}/issuer-certificate"

    async def put(ca_index: str, cert: str, rest: str) -> Any:
        body = {"rid": "A000000099", "ca_index": ca_index, "certificate": cert}
        return await http.put(url, json=body | {"remainder": rest, "exponent": "03"}, headers=cu)

    good, rest = _scheme_certificate(scheme, modulus, "1230")
    expired, rest_e = _scheme_certificate(scheme, modulus, "0125")
    other, rest_o = _scheme_certificate(scheme, bytes([modulus[0] ^ 0x01]) + modulus[1:], "1230")
    tampered = good[:40] + ("0" if good[40] != "0" else "1") + good[41:]
    cases = [
        (await put("02", good, rest), "CA A000000099/02 is not a trusted CA public key"),
        (await put("01", expired, rest_e), "certificate expired on 2025-01-31"),
        (await put("01", other, rest_o), "does not match the issuer key"),
        (await put("01", tampered, rest), "bad signature"),
    ]
    for answer, reason in cases:
        assert answer.status_code == 422, answer.text
        assert reason in answer.text
    ok = await put("01", good, rest)
    assert ok.status_code == 200, ok.text
    assert ok.json()["expires"] == "2030-12-31"


async def test_the_icc_key_pool_refills_itself_in_the_background(
    settings: KeymgmtSettings,
) -> None:
    tuned = settings.model_copy(update={"icc_pool_low": 2, "icc_pool_target": 5})
    runtime = bootstrap(tuned)

    async def free() -> int:
        async with runtime.engine.connect() as conn:
            return await KeymgmtRepository(conn).oda.free_pool_pairs()

    async def full() -> bool:
        return await free() == 5

    async with running(runtime):
        await wait_for(full, timeout=60)
        async with runtime.engine.begin() as conn:  # a batch draws four pairs
            await KeymgmtRepository(conn).oda.draw_pool_pairs([uuid.uuid4() for _ in range(4)])
        await wait_for(full, timeout=60)
    async with runtime.engine.connect() as conn:
        taken = await conn.execute(
            text("SELECT count(*) FROM icc_key_pool WHERE taken_by IS NOT NULL")
        )
        assert taken.scalar_one() == 4
