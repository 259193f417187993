"""EMV CPS personalization script built in the HSM, checked against software oracles.

K_DEK is recomputed here with `cryptography` (CPG202-AES), DGI 8000 is decrypted with it and
compared with pyemv's Option A keys derived from the same test IMKs.
"""

from __future__ import annotations

import logging
import time

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pkcs11 import Attribute, Mechanism, MechanismFlag
from pkcs11.exceptions import KeyNotWrappable, KeyUnextractable
from pyemv import kd

from services.keymgmt.emv.keys import derive_icc_mk
from services.keymgmt.emv.perso import CardRecord, abuild_perso_script, build_perso_script
from services.keymgmt.gp.cardkeys import STATIC_KEYS, card_static_key_kcvs, derive_static_key
from services.keymgmt.hsm.session import Hsm, HsmError
from tests.support.hsm import (
    IMK_AC,
    IMK_SMC,
    IMK_SMI,
    TEST_KMC,
    IssuerKeys,
    soft_aes_cmac_kcv,
    soft_aes_zero_kcv,
    soft_des_kcv,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]
log = logging.getLogger(__name__)

RECORD = CardRecord("4761739001010010", "01", "2512", "DOE/JANE", "201")
DIV = bytes.fromhex("434256430A0B0C0D0001")  # CPLC fabricator, type, serial, batch


def _aes_ecb(key: bytes, data: bytes, decrypt: bool = False) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.ECB())
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


def _expected_static_key(i: int) -> bytes:
    block = DIV[4:10] + bytes([0xF0, i]) + DIV[4:10] + bytes([0x0F, i])
    return _aes_ecb(TEST_KMC, block)


def test_script_matches_the_protocol(hsm: Hsm, test_keys: IssuerKeys) -> None:
    before = hsm.run(lambda h: h.count_objects())
    script = hsm.run(build_perso_script, RECORD, DIV, test_keys.imks, test_keys.kmc_label)
    assert hsm.run(lambda h: h.count_objects()) == before, "per-card keys must be destroyed"
    apdus = [a.hex().upper() for a in script.apdus]
    assert apdus[0] == "80E620000D000007A0000000031010000000"  # INSTALL [for perso]
    assert [c.sensitive for c in script.commands] == [False, False, False, False, True]
    assert apdus[1] == (
        "80E208001E01011B7019570C4761739001010010D25122015F2008" + b"DOE/JANE".hex().upper()
    )
    assert apdus[2] == ("80E208011E01021B70195A0847617390010100105F24032512315F3401019F0702FF00")
    assert apdus[3] == "80E208021291020F500A" + b"CARDBUREAU".hex().upper() + "870101"
    last = script.apdus[4]
    assert last[:5] == bytes.fromhex("80E2880333")
    assert last[5:8] == bytes.fromhex("800030")
    # DGI 8000 = ENC(MK-AC) || ENC(MK-SMI) || ENC(MK-SMC), AES-128-ECB under K_DEK
    k_dek = _expected_static_key(STATIC_KEYS["DEK"])
    clear = _aes_ecb(k_dek, last[8:], decrypt=True)
    expected = [
        kd.derive_icc_mk_a(imk, RECORD.pan, RECORD.psn) for imk in (IMK_AC, IMK_SMI, IMK_SMC)
    ]
    assert [clear[0:16], clear[16:32], clear[32:48]] == expected
    summary = script.summary
    assert summary.dgis == ("0101", "0102", "9102", "8000")
    assert summary.chip_serial == "0A0B0C0D0001"
    assert summary.pan_masked == "476173******0010"
    assert summary.static_key_scheme == "CPG202-AES"
    assert summary.kdek_kcv.value == soft_aes_cmac_kcv(k_dek)
    assert [(n, k.value) for n, k in summary.mk_kcvs] == [
        (n, soft_des_kcv(v)) for n, v in zip(("MK-AC", "MK-SMI", "MK-SMC"), expected, strict=True)
    ]
    assert RECORD.pan not in repr(script)


def test_static_key_kcvs_match_cpg202_aes(hsm: Hsm, test_keys: IssuerKeys) -> None:
    kcvs = hsm.run(card_static_key_kcvs, test_keys.kmc_label, DIV)
    for name, i in STATIC_KEYS.items():
        key = _expected_static_key(i)
        cmac, zero = kcvs[name]
        assert (cmac.value, zero.value) == (soft_aes_cmac_kcv(key), soft_aes_zero_kcv(key))


def test_trusted_wrap_is_refused_by_softhsm(hsm: Hsm, test_keys: IssuerKeys) -> None:
    # SoftHSM 2.6.1: only the SO may set CKA_TRUSTED (and the SO cannot use private keys).
    before = hsm.run(lambda h: h.count_objects())
    with pytest.raises(HsmError, match="CKA_TRUSTED"):
        hsm.run(
            build_perso_script,
            RECORD,
            DIV,
            test_keys.imks,
            test_keys.kmc_label,
            trusted_wrap=True,
        )
    assert hsm.run(lambda h: h.count_objects()) == before


def test_untrusted_key_cannot_wrap_a_wrap_with_trusted_key(
    hsm: Hsm,
    test_keys: IssuerKeys,
) -> None:
    def run(h: Hsm) -> bytes:
        kdek = derive_static_key(h, test_keys.kmc_label, DIV, 3, MechanismFlag.WRAP)
        extra = {Attribute.EXTRACTABLE: True, Attribute.WRAP_WITH_TRUSTED: True}
        mk = derive_icc_mk(
            h, test_keys.imks.ac, RECORD.pan, "01", caps=MechanismFlag(0), extra=extra
        )
        try:
            assert kdek[Attribute.TRUSTED] is False
            return kdek.wrap_key(mk, mechanism=Mechanism.AES_CBC, mechanism_param=bytes(16))
        finally:
            mk.destroy()
            kdek.destroy()

    with pytest.raises(KeyNotWrappable):
        hsm.run(run)


def test_kdek_cannot_wrap_the_issuer_master_key(
    hsm: Hsm,
    test_keys: IssuerKeys,
) -> None:
    def run(h: Hsm) -> bytes:
        kdek = derive_static_key(h, test_keys.kmc_label, DIV, 3, MechanismFlag.WRAP)
        try:
            imk = h.key(test_keys.imks.ac)
            return kdek.wrap_key(imk, mechanism=Mechanism.AES_CBC, mechanism_param=bytes(16))
        finally:
            kdek.destroy()

    with pytest.raises(KeyUnextractable):
        hsm.run(run)


async def test_async_build_and_throughput(hsm: Hsm, test_keys: IssuerKeys) -> None:
    cards = [
        CardRecord(f"47617390{n:08d}", "00", "2712", "CARDHOLDER/TEST", "201") for n in range(300)
    ]
    script = await abuild_perso_script(hsm, cards[0], DIV, test_keys.imks, test_keys.kmc_label)
    assert len(script.apdus) == 5

    def batch(h: Hsm) -> float:
        start = time.perf_counter()
        for card in cards:
            build_perso_script(h, card, DIV, test_keys.imks, test_keys.kmc_label)
        return time.perf_counter() - start

    elapsed = hsm.run(batch)
    rate = len(cards) / elapsed
    log.warning(
        "perso scripts prepared: %d cards in %.3f s = %.0f cards/s", len(cards), elapsed, rate
    )
    assert rate > 20
