"""A SIM through the real pcscd + vpcd: keymgmt's SIM script (HSM, SCP03) personalises a
virtual card's USIM in a station reader, the chip moves to the QA reader, and services/qa's
SIM check reads its files and has keymgmt check its AUTHENTICATE over HTTP; a chip checked
against another card's SIM fails by name."""

from __future__ import annotations

import os
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from services.keymgmt.app import build_app
from services.keymgmt.gp.channel import InitializeUpdateAnswer, ScriptCommand
from services.keymgmt.gp.secure_channel import secure_script
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.keys.ceremonies import load_demo_keys
from services.keymgmt.settings import KeymgmtSettings
from services.keymgmt.sim.perso import build_sim_script
from services.qa.service import QaFailure
from services.qa.sim_check import (
    CHECK_SIM_AUTHENTICATE,
    CHECK_SIM_FILES,
    CHECK_SIM_PIN,
    is_usim,
    sim_chip_checks,
)
from shared.keymgmt.client import KeymgmtClient
from shared.pcsc import PcscClient, ReaderConfig
from shared.service import ServiceRuntime
from tests.support.bus import collect, records_of
from tests.support.keymgmt import publish, vault
from tests.support.keymgmt_sim import sim_ordered, sim_product
from tests.support.pcscd import GET_CPLC, SELECT_ISD, connect
from vcard.feeder import Feeder

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]


async def test_sim_personalised_at_a_station_passes_qa_in_another_reader(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
    feeder: Feeder,
    client: PcscClient,
    readers: list[ReaderConfig],
) -> None:
    runtime, http = keymgmt
    issuer = f"ia{unique}"
    await load_demo_keys(settings, issuer)
    product = await sim_product(runtime, http, keymgmt_hsm, issuer, unique)
    cards = [await vault(http, unique, issuer) for _ in range(2)]
    await publish(settings, *(sim_ordered(c, issuer, product, uuid.uuid4()) for c in cards))
    await collect(
        settings.kafka_bootstrap, settings.topic("keymgmt"), records_of("card.prepared", 2)
    )
    card_id = uuid.UUID(cards[0]["card_id"])
    async with runtime.engine.connect() as db:
        found = await db.execute(text("SELECT * FROM sim_cards WHERE card_id = :c"), {"c": card_id})
        sim = dict(found.mappings().one())

    station, qa = readers[1].name, readers[-1].name
    async with await connect(client, station) as chip:
        cplc, sw = await chip.transmit(GET_CPLC)
        assert sw == 0x9000
        assert (await chip.transmit(SELECT_ISD))[1] == 0x9000
        challenge = os.urandom(8)
        iu, sw = await chip.transmit(bytes.fromhex("8050000008") + challenge + b"\x00")
        assert sw == 0x9000

        def build(h: Hsm, answer: InitializeUpdateAnswer) -> tuple[ScriptCommand, ...]:
            div = answer.diversification_data
            return build_sim_script(h, sim, div, settings.kmc_label, 2).commands

        secured = await keymgmt_hsm.call(secure_script, settings.kmc_label, challenge, iu, build)
        answers = await chip.transmit_script(list(secured.apdus))
        assert [sw for _, sw in answers] == [0x9000] * 11  # EXT AUTH, INSTALL, 9 x STORE DATA
    serial = cplc[3 + 12 : 3 + 18].hex().upper()
    assert (await feeder.eject(station))["ejected"] == serial

    await feeder.insert(qa, serial)
    await client.wait_for_card(qa, timeout=5)
    transport = httpx.ASGITransport(app=build_app(runtime))
    oracle = KeymgmtClient("http://keymgmt", f"qa-{unique}", transport=transport)
    try:
        async with await client.connect(qa) as reader:
            assert await is_usim(reader)
            checks = await sim_chip_checks(reader, card_id, oracle)
            assert checks == [CHECK_SIM_FILES, CHECK_SIM_PIN, CHECK_SIM_AUTHENTICATE]
            assert await is_usim(reader)
            with pytest.raises(QaFailure, match="sim-files: EF_ICCID does not hold the prepared"):
                await sim_chip_checks(reader, uuid.UUID(cards[1]["card_id"]), oracle)
    finally:
        await oracle.aclose()
        await feeder.eject(qa)
