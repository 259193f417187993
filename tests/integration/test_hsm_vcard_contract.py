"""docs/perso-protocol.md from both ends: our HSM-built script, protected by the HSM's SCP03
host, personalises the virtual card (written independently against the same text), and the
card's ARQC verifies in the HSM."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.keymgmt.emv.keys import verify_arqc
from services.keymgmt.emv.perso import CardRecord, build_perso_script
from services.keymgmt.emv.records import aip
from services.keymgmt.gp.channel import InitializeUpdateAnswer, ScriptCommand
from services.keymgmt.gp.secure_channel import secure_script
from services.keymgmt.hsm.session import Hsm
from tests.support.emv_cards import card_profile_on, issuer_oda_on
from tests.support.hsm import TEST_KMC, IssuerKeys

vcard_card = pytest.importorskip("vcard.card")
vcard_store = pytest.importorskip("vcard.store")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

RECORD = CardRecord("4761739001010010", "01", "2512", "DOE/JANE", "201")
CDOL1 = bytes.fromhex("00000000100000000000000008260000008000097825112400")


@pytest.mark.parametrize("scp", ["03", "02"])
def test_script_personalises_the_virtual_card_and_arqc_verifies(
    hsm: Hsm,
    test_keys: IssuerKeys,
    tmp_path: Path,
    scp: str,
) -> None:
    store = vcard_store.CardStore(tmp_path)
    card = vcard_card.VirtualCard(store.manufacture(TEST_KMC, scp=scp), store.save)
    card.power_on()
    assert card.process(bytes.fromhex("00A4040008A00000015100000000"))[-2:] == b"\x90\x00"
    host_challenge = bytes.fromhex("0102030405060708")
    answer = card.process(bytes.fromhex("8050000008") + host_challenge + b"\x00")
    assert answer[-2:] == b"\x90\x00"
    clear: list[bytes] = []
    profile = None

    def build(h: Hsm, iu: InitializeUpdateAnswer) -> tuple[ScriptCommand, ...]:
        nonlocal profile
        data = card_profile_on(h, RECORD, issuer_oda_on(h, test_keys.issuer)).data
        profile = data.profile
        script = build_perso_script(
            h, RECORD, iu.diversification_data, test_keys.imks, test_keys.kmc_label, data
        )
        assert script.summary.chip_serial == card.chip_serial
        clear.extend(script.apdus)
        return script.commands

    secured = hsm.run(
        secure_script,
        test_keys.kmc_label,
        host_challenge,
        answer[:-2],
        build,
    )
    assert secured.security_level == 0x03
    # EXTERNAL AUTHENTICATE, INSTALL, 13 DGIs of docs/emv-profile.md (8201 over 4 commands)
    assert len(secured.apdus) == 2 + 16
    for apdu in secured.apdus:
        response = card.process(apdu)
        assert response[-2:] == b"\x90\x00", (apdu[:4].hex(), response.hex())
    assert card.state.lifecycle == "personalized"

    assert profile is not None
    product_aip = aip(profile)  # the product's, as the card's DGI 9104 holds it
    for n, un in enumerate((b"\x38\x04\x82\x3e", b"\x00\x00\x00\x01")):
        # a transaction each: SELECT, GET PROCESSING OPTIONS (default PDOL: 22 bytes of data)
        assert card.process(bytes.fromhex("00A4040007A000000003101000"))[-2:] == b"\x90\x00"
        gpo = card.process(bytes.fromhex("80A80000188316") + bytes(22) + b"\x00")
        assert gpo[-2:] == b"\x90\x00"
        assert bytes.fromhex("8202") + product_aip in gpo[:-2]  # format 2: 82 AIP, 94 AFL
        if n == 0:
            record1 = card.process(bytes.fromhex("00B2010C00"))
            assert record1[:-2] == clear[1][8:]  # the `70` template exactly as stored
        cdol1 = CDOL1 + un
        resp = card.process(bytes.fromhex("80AE80001D") + cdol1 + b"\x00")
        assert (resp[0], resp[2]) == (0x80, 0x80)  # format 1, CID: an ARQC
        assert resp[-2:] == b"\x90\x00"
        atc, arqc = resp[3:5], resp[5:13]
        args = (test_keys.imks.ac, RECORD.pan, RECORD.psn, atc, cdol1)
        assert hsm.run(verify_arqc, *args, arqc, product_aip)
        assert not hsm.run(verify_arqc, *args, bytes(8), product_aip)
        assert not hsm.run(verify_arqc, *args, arqc, bytes.fromhex("3800"))  # a fixed AIP
