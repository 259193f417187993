"""SCP03 host side in SoftHSM (services/keymgmt/gp/secure_channel.py) against the independent
software host of tests/support/scp03_host.py, which knows the clear test KMC: byte-for-byte the same
EXTERNAL AUTHENTICATE and protected commands, the card cryptogram checked, keys kept in the HSM.
"""

from __future__ import annotations

import os

import pytest
from pkcs11 import Attribute, Mechanism, MechanismFlag

from services.keymgmt.gp.cardkeys import derive_static_key
from services.keymgmt.gp.channel import (
    CardCryptogramMismatch,
    InitializeUpdateAnswer,
    ScriptCommand,
    SecureChannelError,
)
from services.keymgmt.gp.secure_channel import derive_session_key, secure_script
from services.keymgmt.hsm.session import Hsm
from tests.support.hsm import TEST_KMC, IssuerKeys
from tests.support.scp02_host import Scp02Host, scp02_keys
from tests.support.scp02_host import cbc as tdes_cbc
from tests.support.scp02_host import pad as tdes_pad
from tests.support.scp03_host import Scp03Host, cpg202_aes, ecb, scp03_kdf

pytestmark = [pytest.mark.integration]

DIV = bytes.fromhex("43425643A1B2C3D40001")
OTHER_KMC = bytes.fromhex("0F1E2D3C4B5A69788796A5B4C3D2E1F0")
COMMANDS = [
    ScriptCommand(bytes.fromhex("80E60000") + bytes([9]) + bytes(9)),
    ScriptCommand(bytes.fromhex("80E2080005") + bytes.fromhex("0101027000")),
    ScriptCommand(bytes.fromhex("80CA9F7F00")),  # no data: counted, not encrypted
    ScriptCommand(bytes.fromhex("80E2880013") + bytes.fromhex("800010") + bytes(range(16))),
]


def card_answer(kmc: bytes, host_challenge: bytes, card_challenge: bytes) -> bytes:
    """What a card made with `kmc` answers to INITIALIZE UPDATE (independent computation)."""
    s_mac = scp03_kdf(cpg202_aes(kmc, DIV, 2), 0x06, host_challenge + card_challenge, 128)
    cryptogram = scp03_kdf(s_mac, 0x00, host_challenge + card_challenge, 64)
    return DIV + bytes.fromhex("300300") + card_challenge + cryptogram


def expected_apdus(host_challenge: bytes, answer: bytes, level: int) -> list[bytes]:
    host = Scp03Host.from_kmc(TEST_KMC, host_challenge, answer)
    assert host.card_authentic
    out = [host.external_authenticate(level)]
    for command in COMMANDS:
        apdu = command.apdu
        data = apdu[5 : 5 + apdu[4]] if len(apdu) > 5 else b""
        le = apdu[5 + apdu[4] :] if len(apdu) > 5 else apdu[4:]
        cla, ins, p1, p2 = apdu[:4]
        out.append(host.wrap(cla, ins, p1, p2, data) + le)
    return out


@pytest.mark.parametrize("sensitive", [False, True])
def test_hsm_host_matches_the_independent_host(
    hsm: Hsm,
    test_keys: IssuerKeys,
    sensitive: bool,
) -> None:
    host_challenge, card_challenge = os.urandom(8), os.urandom(8)
    answer = card_answer(TEST_KMC, host_challenge, card_challenge)
    commands = list(COMMANDS)
    commands[-1] = ScriptCommand(commands[-1].apdu, sensitive=sensitive)
    before = hsm.run(lambda h: h.count_objects())
    script = hsm.run(
        secure_script, test_keys.kmc_label, host_challenge, answer, lambda _h, _a: commands
    )
    assert hsm.run(lambda h: h.count_objects()) == before, "session keys must be destroyed"
    level = 0x03 if sensitive else 0x01
    assert script.security_level == level
    assert script.chip_serial == "A1B2C3D40001"
    assert list(script.apdus) == expected_apdus(host_challenge, answer, level)
    if sensitive:
        assert bytes(range(16)) not in b"".join(script.apdus)  # data encrypted


def test_card_with_other_keys_is_refused_before_any_script(
    hsm: Hsm,
    test_keys: IssuerKeys,
) -> None:
    host_challenge = os.urandom(8)
    answer = card_answer(OTHER_KMC, host_challenge, os.urandom(8))
    built: list[bool] = []

    def build(_h: Hsm, _a: InitializeUpdateAnswer) -> list[ScriptCommand]:
        built.append(True)
        return COMMANDS

    before = hsm.run(lambda h: h.count_objects())
    with pytest.raises(CardCryptogramMismatch, match="card cryptogram mismatch: chip A1B2C3D40001"):
        hsm.run(secure_script, test_keys.kmc_label, host_challenge, answer, build)
    assert not built
    assert hsm.run(lambda h: h.count_objects()) == before


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (DIV + bytes.fromhex("300300") + bytes(15), "is 28 bytes"),
        (DIV + bytes.fromhex("3001") + bytes(17), "SCP01, not SCP03"),
        (DIV + bytes.fromhex("3002") + bytes(16), "key version 30 is not an SCP02 key set"),
        (DIV + bytes.fromhex("200300") + bytes(16), "key version 20"),
        (DIV + bytes.fromhex("300310") + bytes(16), "pseudo-random"),
    ],
)
def test_unusable_answers_say_why(answer: bytes, problem: str) -> None:
    with pytest.raises(SecureChannelError, match=problem):
        InitializeUpdateAnswer.parse(answer)


def test_session_keys_are_sensitive_hsm_objects_equal_to_the_kdf(
    hsm: Hsm,
    test_keys: IssuerKeys,
) -> None:
    context = os.urandom(16)

    def run(h: Hsm) -> tuple[bool, bool, bytes]:
        caps = MechanismFlag.ENCRYPT | MechanismFlag.DERIVE
        static = derive_static_key(h, test_keys.kmc_label, DIV, 1, caps)
        s_enc = derive_session_key(static, 0x04, context, MechanismFlag.ENCRYPT)
        try:
            probe = s_enc.encrypt(bytes(16), mechanism=Mechanism.AES_ECB)
            assert isinstance(probe, bytes)
            return bool(s_enc[Attribute.SENSITIVE]), bool(s_enc[Attribute.EXTRACTABLE]), probe
        finally:
            s_enc.destroy()
            static.destroy()

    sensitive, extractable, probe = hsm.run(run)
    assert sensitive
    assert not extractable
    clear = scp03_kdf(cpg202_aes(TEST_KMC, DIV, 1), 0x04, context, 128)
    assert probe == ecb(clear, bytes(16))


def scp02_answer(kmc: bytes, host_challenge: bytes, card_challenge: bytes, seq: bytes) -> bytes:
    """What an SCP02 card made with `kmc` answers (independent computation)."""
    k_enc, _ = scp02_keys(kmc, DIV)
    s_enc = tdes_cbc(k_enc, b"\x01\x82" + seq + bytes(12))
    cryptogram = tdes_cbc(s_enc, tdes_pad(host_challenge + seq + card_challenge))[-8:]
    return DIV + bytes.fromhex("2002") + seq + card_challenge + cryptogram


@pytest.mark.parametrize("sensitive", [False, True])
def test_scp02_hsm_host_matches_the_independent_host(
    hsm: Hsm,
    test_keys: IssuerKeys,
    sensitive: bool,
) -> None:
    host_challenge = os.urandom(8)
    answer = scp02_answer(TEST_KMC, host_challenge, os.urandom(6), b"\x00\x2a")
    commands = list(COMMANDS)
    commands[-1] = ScriptCommand(commands[-1].apdu, sensitive=sensitive)
    before = hsm.run(lambda h: h.count_objects())
    script = hsm.run(
        secure_script, test_keys.kmc_label, host_challenge, answer, lambda _h, _a: commands
    )
    assert hsm.run(lambda h: h.count_objects()) == before, "session keys must be destroyed"
    level = 0x03 if sensitive else 0x01
    host = Scp02Host.from_kmc(TEST_KMC, host_challenge, answer)
    assert host.card_authentic
    expected = [host.external_authenticate(level)]
    for command in commands:
        apdu = command.apdu
        data = apdu[5 : 5 + apdu[4]] if len(apdu) > 5 else b""
        le = apdu[5 + apdu[4] :] if len(apdu) > 5 else apdu[4:]
        cla, ins, p1, p2 = apdu[:4]
        expected.append(host.wrap(cla, ins, p1, p2, data) + le)
    assert script.security_level == level
    assert list(script.apdus) == expected


def test_scp02_card_with_other_keys_is_refused(
    hsm: Hsm,
    test_keys: IssuerKeys,
) -> None:
    host_challenge = os.urandom(8)
    answer = scp02_answer(OTHER_KMC, host_challenge, os.urandom(6), b"\x00\x01")
    with pytest.raises(CardCryptogramMismatch):
        hsm.run(secure_script, test_keys.kmc_label, host_challenge, answer, lambda _h, _a: [])
