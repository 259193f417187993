"""Visa CVV, iCVV and CVV2 in the HSM from a CVK pair held as two single-DES keys.

Oracles: psec's documented CVV example and psec.cvv (independent) computed in the test.
pyemv 1.5 has no CVV function (only CVC3), so psec is the independent implementation.
"""

from __future__ import annotations

import random

import pytest
from psec import cvv as psec_cvv

from services.keymgmt.emv.cvv import CvkLabels, card_verification_values, cvv_input, visa_cvv
from services.keymgmt.emv.pin import decimalise
from services.keymgmt.hsm.session import Hsm, describe_key
from services.keymgmt.keys.ceremony import CeremonyKeyType, KeyUsage, import_key_from_components
from tests.support.hsm import soft_des_kcv, split

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

CVK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")  # psec's documented example CVK


@pytest.fixture(scope="module")
def cvk(hsm: Hsm) -> CvkLabels:
    labels = CvkLabels.for_issuer("cvvbank")
    for label, half in ((labels.a, CVK[:8]), (labels.b, CVK[8:])):
        comps = split(half, bytes.fromhex("1F2E3D4C5B6A7988"), "des")
        hsm.run(
            import_key_from_components,
            label,
            CeremonyKeyType.DES1,
            comps,
            KeyUsage.ENCRYPT,
            soft_des_kcv(half),
        )
    return labels


def test_cvv_published_vector(hsm: Hsm, cvk: CvkLabels) -> None:
    assert hsm.run(visa_cvv, cvk, "1234567890123456", "9912", "220") == "170"


def test_cvv_icvv_cvv2_match_psec(hsm: Hsm, cvk: CvkLabels) -> None:
    rng = random.Random(7)
    for _ in range(25):
        pan = "".join(rng.choice("0123456789") for _ in range(rng.choice((13, 15, 16, 19))))
        expiry = f"{rng.randrange(25, 40):02d}{rng.randrange(1, 13):02d}"
        values = hsm.run(card_verification_values, cvk, pan, expiry, "201")
        assert values.cvv == psec_cvv.generate_cvv(CVK, pan, expiry, "201")
        assert values.icvv == psec_cvv.generate_cvv(CVK, pan, expiry, "999")
        assert values.cvv2 == psec_cvv.generate_cvv(CVK, pan, expiry, "000")
        assert values.cvv not in repr(values)


def test_decimalisation_falls_back_to_letters() -> None:
    # psec keeps only 0-9; the Visa rule then takes A-F as 0-5 (all letters here).
    assert decimalise(bytes.fromhex("ABCDEFABCDEFABCD"), 3) == "012"
    assert decimalise(bytes.fromhex("A1B2C3D4E5F6A7B8"), 3) == "123"


def test_cvv_input_is_pan_expiry_service_code_zero_padded() -> None:
    assert cvv_input("4123456789012345", "8701", "101").hex() == (
        "41234567890123458701101000000000"
    )
    with pytest.raises(ValueError, match="service code"):
        cvv_input("4123456789012345", "8701", "1010")


def test_cvk_halves_are_locked_single_des_keys(hsm: Hsm, cvk: CvkLabels) -> None:
    for label, half in ((cvk.a, CVK[:8]), (cvk.b, CVK[8:])):
        info = hsm.run(describe_key, label)
        assert (info.key_type, info.bits) == ("_DES", 64)
        assert info.sensitive
        assert not info.extractable
        assert info.kcvs[0].value == soft_des_kcv(half)
