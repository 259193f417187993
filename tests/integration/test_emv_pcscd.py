"""QA's EMV terminal kernel against virtual cards through the real pcscd + vpcd.

A card is personalized in a station reader with the test issuer's DGIs (tests/support/
emv_issuer.py, from the specifications) over the independent SCP03 host, moved to the QA reader
by the feeder, and the kernel runs the contact flow (PSE, SELECT, GPO, READ RECORD, SDA, DDA,
offline PIN, GENERATE AC 1 and 2 with CDA) and the contactless flow (PPSE, GPO, CDA) over PC/SC,
on T=1 and on T=0 (GET RESPONSE through the PC/SC client).
"""

from __future__ import annotations

import os
from datetime import date

import pytest
from pyemv import ac, kd

from services.qa.emv.kernel import CID_ARQC, CID_TC, Kernel, TerminalConfig
from services.qa.emv.oda import PublicKey
from shared.pcsc import CardConnection, PcscClient, ReaderConfig
from tests.support import emv_issuer
from tests.support.pcscd import GET_CPLC, SELECT_ISD, connect
from tests.support.scp03_host import Scp03Host, initialize_update, install_for_perso
from tests.support.vcard import perso_commands, secured
from vcard.card import ATR_T0, ATR_T1
from vcard.crypto import TEST_KMC
from vcard.feeder import ArmedFaults, Feeder

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]


def terminal() -> TerminalConfig:
    rid, modulus, index, exponent = emv_issuer.ca_public_key()
    return TerminalConfig({(rid, index): PublicKey(modulus, exponent)}, today=date(2026, 12, 7))


async def personalize(conn: CardConnection) -> tuple[emv_issuer.CardData, str]:
    """The test issuer's card, personalized; and the chip serial."""
    data, sw = await conn.transmit(GET_CPLC)
    assert sw == 0x9000
    card = emv_issuer.build_card(data[3:], TEST_KMC)
    assert (await conn.transmit(SELECT_ISD))[1] == 0x9000
    challenge = os.urandom(8)
    answer, sw = await conn.transmit(initialize_update(challenge))
    assert sw == 0x9000
    host = Scp03Host.from_kmc(TEST_KMC, challenge, answer)
    script = [
        host.external_authenticate(0x03),
        host.wrap(0x80, 0xE6, 0x20, 0x00, install_for_perso(emv_issuer.AID)),
        *(secured(host, c) for c in perso_commands(card.dgis)),
    ]
    assert {sw for _, sw in await conn.transmit_script(script)} == {0x9000}
    return card, data[15:21].hex().upper()


def pyemv_ac(mk_ac: bytes, atc: bytes, data: bytes) -> bytes:
    session_key = kd.derive_common_sk(mk_ac, atc + bytes(6))
    return bytes(ac.generate_ac(session_key, data + emv_issuer.AIP + atc))


async def test_contact_and_contactless_flows_over_pcscd(
    feeder: Feeder, client: PcscClient, readers: list[ReaderConfig]
) -> None:
    station, qa = readers[1].name, readers[-1].name
    async with await connect(client, station) as conn:
        card, serial = await personalize(conn)
    assert (await feeder.eject(station))["ejected"] == serial
    await feeder.insert(qa, serial)
    await client.wait_for_card(qa, timeout=5)
    try:
        async with await client.connect(qa) as conn:
            assert conn.atr == ATR_T1
            kernel = Kernel(conn.transmit, terminal())
            out = await kernel.contact(emv_issuer.PIN)
            assert out.oda == ["SDA", "DDA", "CDA"]
            assert out.pin_verified
            assert out.first is not None
            assert out.second is not None
            assert (out.first.cid, out.second.cid) == (CID_ARQC, CID_TC)
            assert out.first.ac == pyemv_ac(card.mk_ac, out.first.atc, out.first.cdol_data)
            tap = await Kernel(conn.transmit, terminal()).contactless()
            assert tap.oda == ["SDA", "CDA"]  # no INTERNAL AUTHENTICATE on a tap
            assert tap.first is not None
            assert tap.first.atc == b"\x00\x02"
            assert tap.first.ac == pyemv_ac(card.mk_ac, tap.first.atc, tap.first.cdol_data)
    finally:
        await feeder.eject(qa)
        await client.wait_for_removal(qa, timeout=5)


async def test_t0_card_runs_the_contact_flow_over_pcscd(
    feeder: Feeder, client: PcscClient, readers: list[ReaderConfig]
) -> None:
    reader = readers[3].name
    before = await client.status(reader)
    feeder.arm(reader, ArmedFaults(protocol="T=0"))
    await feeder.eject(reader)
    await client.wait_for_removal(reader, timeout=15, since=before)
    await client.wait_for_card(reader, timeout=15, since=before)
    async with await connect(client, reader) as conn:
        assert conn.protocol == "T=0"
        assert conn.atr == ATR_T0
        card, _serial = await personalize(conn)
        out = await Kernel(conn.transmit, terminal()).contact(emv_issuer.PIN)
    assert out.oda == ["SDA", "DDA", "CDA"]
    assert out.first is not None
    assert out.first.ac == pyemv_ac(card.mk_ac, out.first.atc, out.first.cdol_data)
    await feeder.eject(reader)
