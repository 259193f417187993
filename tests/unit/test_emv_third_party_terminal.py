"""A terminal library nobody here wrote (the `emv` package from PyPI, python-emv) runs a plain
contact flow on the virtual card: PSE directory, SELECT, GPO with the card's PDOL data, READ
RECORD over the AFL, GET DATA, offline PIN VERIFY and GENERATE AC (ARQC, checked with pyemv).

The library drives a pyscard connection under T=0; the card is attached in-process through a
connection object with pyscard's methods. Its GET PROCESSING OPTIONS sends no PDOL data unless
given some, so the test builds the PDOL data from the FCI with the library's own DOL type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest
from emv.cap import get_arqc_req  # type: ignore[import-untyped]
from emv.card import Card  # type: ignore[import-untyped]
from emv.protocol.command import GetProcessingOptions  # type: ignore[import-untyped]
from emv.protocol.data import Tag  # type: ignore[import-untyped]
from pyemv import ac, kd

from tests.support import emv_issuer
from tests.support.vcard import new_card, personalize_dgis
from vcard.card import VirtualCard
from vcard.crypto import TEST_KMC
from vcard.store import CardStore

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class PyscardLikeConnection:
    """What python-emv uses of a pyscard CardConnection."""

    T0_protocol: Final = 1

    def __init__(self, card: VirtualCard) -> None:
        self.card = card
        self.sent: list[bytes] = []

    def connect(self, protocol: int) -> None:
        assert protocol == self.T0_protocol

    def getProtocol(self) -> int:  # noqa: N802 - pyscard's name
        return self.T0_protocol

    def transmit(self, apdu: list[int]) -> tuple[list[int], int, int]:
        self.sent.append(bytes(apdu))
        answer = self.card.process(bytes(apdu))
        return list(answer[:-2]), answer[-2], answer[-1]


def test_python_emv_runs_a_contact_flow(tmp_path: Path) -> None:
    card = new_card(CardStore(tmp_path / "cards"))
    data = emv_issuer.build_card(card.state.cplc, TEST_KMC)
    assert set(personalize_dgis(card, data.dgis)) == {0x9000}
    card.state.protocol = "T=0"  # the library speaks T=0 only; the card takes it at reset
    card.power_on()
    connection = PyscardLikeConnection(card)
    terminal = Card(connection)

    apps = terminal.list_applications()  # SELECT PSE, READ RECORD of its SFI
    assert [bytes(app[Tag.ADF_NAME]) for app in apps] == [emv_issuer.AID]
    fci = terminal.select_application(apps[0][Tag.ADF_NAME])
    pdol = fci.data[Tag.FCI][Tag.FCI_PROP][Tag.PDOL]
    pdol_data = list(pdol.serialise({}))  # a contact terminal: every element zeros
    options = terminal.tp.exchange(GetProcessingOptions([0x83, len(pdol_data), *pdol_data]))
    template = options.data[Tag.RMTF2]
    assert bytes(template[0x82]) == emv_issuer.AIP
    app_data = terminal.get_application_data(template[0x94])
    assert bytes(app_data[Tag.PAN]) == bytes.fromhex(emv_issuer.PAN)
    metadata = terminal.get_metadata()
    assert metadata["pin_retries"] == 3
    assert metadata["atc"] == 0
    terminal.verify_pin(emv_issuer.PIN)
    answer = terminal.tp.exchange(get_arqc_req(app_data, value=12.34, challenge=12345678))
    format1 = bytes(answer.data[Tag.RMTF1])
    cid, atc, cryptogram = format1[0], format1[1:3], format1[3:11]
    assert (cid, atc) == (0x80, b"\x00\x01")
    sent = connection.sent[-2]  # the GENERATE AC, before its GET RESPONSE
    cdol1_data = sent[5 : 5 + sent[4]]
    session_key = kd.derive_common_sk(data.mk_ac, atc + bytes(6))
    expected = ac.generate_ac(session_key, cdol1_data + emv_issuer.AIP + atc)
    assert cryptogram == bytes(expected)
