"""keymgmt in process on the real stack for tests: its SoftHSM module and token, settings with a
fresh topic prefix and schema, the running service (fixtures registered in tests/conftest.py),
and the requests and events the keymgmt tests of every service share."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.keymgmt.app import MIGRATIONS, bootstrap, build_app
from services.keymgmt.hsm.process import process_hsm
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremonies import CeremonySpec, run_demo_ceremony
from services.keymgmt.keys.ceremony import CeremonyKeyType, KeyUsage
from services.keymgmt.settings import KeymgmtSettings
from shared import events
from shared.db import make_engine, migrate
from shared.service import ServiceRuntime
from tests.conftest import running
from tests.support.bus import collect, publish_events, wait_for
from tests.support.hsm import HsmToken
from tests.support.printer import TestPrinter
from tests.support.purge_scan import pan_secret, table_hits
from tests.support.tls import TestCa

PAN16, PAN19 = "4761739001010010", "6799998900000060018"  # test PANs (Luhn-valid)


ADDRESS: dict[str, Any] = {
    "lines": ["1 Test Street"],
    "postcode": "T1 1ST",
    "city": "Testville",
    "country": "GB",
}


@pytest.fixture(scope="module")
def keymgmt_module(hsm_token: HsmToken) -> str:
    module = Path(hsm_token.module).with_name("libsofthsm2-keymgmt.so")
    shutil.copyfile(hsm_token.module, module)
    return str(module)


@pytest.fixture(scope="module")
async def keymgmt_hsm(
    keymgmt_module: str,
    hsm_token: HsmToken,
) -> AsyncIterator[Hsm]:
    """Held open for the module (on its own token): every runtime and ceremony of its tests
    shares it."""
    base = token_settings(keymgmt_module, hsm_token)
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(hsm_token.softhsm_conf)  # read once, by C_Initialize
    try:
        async with process_hsm(base) as hsm:
            yield hsm
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous


def token_settings(module: str, token: HsmToken, **kw: Any) -> KeymgmtSettings:
    return KeymgmtSettings(
        environment="test",
        pkcs11_module=module,
        hsm_token=token.label,
        hsm_pin=token.user_pin,
        openssl_conf=str(token.openssl_conf),
        **kw,
    )


@pytest.fixture
def settings(
    stack_env: dict[str, str],
    unique: str,
    keymgmt_module: str,
    hsm_token: HsmToken,
    keymgmt_hsm: Hsm,
) -> KeymgmtSettings:
    u = unique
    return token_settings(
        keymgmt_module,
        hsm_token,
        topic_prefix=f"t{u}",
        keymgmt_schema=f"keymgmt_{u}",
        vault_key_label=f"b{u}/VAULT/1",
        pan_hash_key_label=f"b{u}/PANHASH/1",
        kmc_label=f"b{u}/KMC/1",
        service_tokens=f"intake=in-{u},graphical=gr-{u},fulfillment=fu-{u},qa=qa-{u}",
        principals=f"custodian:carol=cu-{u},admin:root=ad-{u},station:station-a=st-{u},"
        f"auditor:ann=au-{u},issuer:a-ops:ia{u}=ia-{u},issuer:b-ops:ib{u}=ib-{u},"
        f"custodian:cyril=cu2-{u},custodian:cleo=cu3-{u},station:station-b=st2-{u},"
        f"operator:olga=op-{u}",
        perso_stations="station-a",  # as deploy/local: each prepared batch goes to station-a
    )


@pytest.fixture
async def pin_printer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stack_env: dict[str, str]
) -> AsyncIterator[TestPrinter]:
    """keymgmt's PIN mailer printer: a real IPP printer of its own serving IPPS only (issue 16),
    its URI and CA in keymgmt's environment."""
    ca = TestCa.create(tmp_path / "pin-ca")
    ca.issue(tmp_path / "pin-keys")
    device = TestPrinter(tmp_path / "pin-printer", name="test-pin", tls_keys=tmp_path / "pin-keys")
    device.start()
    monkeypatch.setenv("BUREAU_PIN_PRINTER_URI", device.uri)
    monkeypatch.setenv("BUREAU_PIN_PRINTER_CA", str(ca.cert_file))
    try:
        await device.wait_up()
        yield device
    finally:
        device.stop()


@pytest.fixture
async def keymgmt_engine(settings: KeymgmtSettings) -> AsyncIterator[AsyncEngine]:
    """keymgmt's schema of the test, migrated, for tests that drive its repositories directly
    (a ceremony without the HTTP service)."""
    engine = make_engine(settings.database_url, settings.keymgmt_schema)
    await migrate(engine, settings.keymgmt_schema, MIGRATIONS)
    yield engine
    await engine.dispose()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def keymgmt(settings: KeymgmtSettings) -> AsyncIterator[tuple[ServiceRuntime, Any]]:
    runtime = bootstrap(settings)
    async with running(runtime):
        transport = httpx.ASGITransport(app=build_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://keymgmt") as http:

            async def hsm_open() -> bool:
                return runtime.deps.gate.hsm is not None

            await wait_for(hsm_open)
            yield runtime, http


async def vault(http: httpx.AsyncClient, u: str, issuer: str, pan: str = PAN16) -> Any:
    card: dict[str, Any] = {"card_id": str(uuid.uuid4()), "pan": pan, "psn": "01", "expiry": "2812"}
    card |= {"cardholder_name": "DOE/JANE", "address": ADDRESS}
    answer = await http.post(
        "/v1/vault/cards", json={"issuer_id": issuer, "cards": [card]}, headers=auth(f"in-{u}")
    )
    assert answer.status_code == 200, answer.text
    return card | answer.json()["cards"][0]


def ordered(card: dict[str, Any], issuer: str) -> events.CardOrdered:
    return events.CardOrdered(
        issuer_id=issuer,
        actor="intake",
        card_id=uuid.UUID(card["card_id"]),
        order_id=uuid.uuid4(),
        batch_id=uuid.uuid4(),
        product_id="visa-classic",
        pan_token=card["pan_token"],
        masked_pan=card["masked_pan"],
        expiry="2812",
        sequence=0,
    )


async def publish(settings: KeymgmtSettings, *items: events.Event, stream: str = "intake") -> None:
    """Play another service: its events on its stream (intake's by default)."""
    await publish_events(settings, *((stream, item) for item in items))


async def pan_hits(runtime: ServiceRuntime, pans: list[str]) -> list[str]:
    """Every column of keymgmt's schema searched for the PANs in each of their forms (the purge
    scan, tests/support/purge_scan.py): the `table.column` of each hit."""
    hits = await table_hits(runtime.engine, [runtime.schema], [pan_secret("PAN", p) for p in pans])
    return sorted({hit.removeprefix(f"PAN in {runtime.schema}.") for hit in hits})


PIN_3DES = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


PIN_AES = bytes.fromhex("00112233445566778899AABBCCDDEEFF")


PVK = bytes.fromhex("89ABCDEF01234567FEDCBA9876543210")
CVK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PROFILE = {
    "pin_length": 4,
    "pin_formats": ["ISO-9564-1-FORMAT-0", "ISO-9564-1-FORMAT-4"],
    "pin_verification": "visa-pvv",
    "pvki": "2",
    "cvv": True,
}


async def load_security_keys(
    runtime: ServiceRuntime, hsm: Hsm, issuer: str, pin_usage: KeyUsage = KeyUsage.ENCRYPT_ONLY
) -> None:
    """The issuer's PIN, PVK and CVK keys by ceremony. The PIN keys' usage: `encrypt_only`, or
    `encrypt` where keymgmt prints PIN mailers (on SoftHSM, the dev/test fallback, the mailer
    path decrypts the PIN block)."""
    des1, des2, aes = CeremonyKeyType.DES1, CeremonyKeyType.DES2, CeremonyKeyType.AES128
    enc, enc_only = KeyUsage.ENCRYPT, KeyUsage.ENCRYPT_ONLY
    for usage, kt, key_usage, value in (
        ("PIN-3DES", des2, pin_usage, PIN_3DES),
        ("PIN-AES", aes, pin_usage, PIN_AES),
        ("PVK", des2, enc_only, PVK),
        ("CVK-A", des1, enc, CVK[:8]),
        ("CVK-B", des1, enc, CVK[8:]),
    ):
        spec = CeremonySpec(f"{issuer}/{usage}/1", issuer, kt, key_usage, 2, "test")
        first = bytes(range(0x31, 0x31 + len(value))).hex()
        await run_demo_ceremony(runtime.engine, hsm, spec, value.hex(), first)


async def prepared_events(config: KeymgmtSettings, count: int) -> list[events.Event]:
    """The first ``count`` card.prepared on keymgmt's stream (which also carries the ICC key
    pool's refills and draws, and the retention purges)."""

    def prepared(records: list[Any]) -> list[events.Event]:
        decoded = (events.decode_event(r.value) for r in records)
        return [e for e in decoded if e.type == "card.prepared"]

    records = await collect(
        config.kafka_bootstrap, config.topic("keymgmt"), lambda seen: len(prepared(seen)) >= count
    )
    return prepared(records)
