"""The production DES3 key wrap (hsm.des3_wrap, CKM_DES3_ECB): DGI 8000 for a DES-keyed card
(SCP02 K_DEK) is each per-card master key enciphered with 3DES-ECB under K_DEK, made by
C_WrapKey without the key ever in clear.

Marked `hsm_des3_wrap`: it runs on any token whose mechanism list gives CKM_DES3_ECB the
CKF_WRAP flag and whose C_WrapKey accepts it (hsm.des3_wrap_missing checks both), and is
skipped with the reason on the others. SoftHSM 2.6.1 advertises the flag but refuses the wrap.
By default the token is the test session's fresh SoftHSM token; to run it on another PKCS#11
token set BUREAU_DES3_WRAP_PKCS11_MODULE, BUREAU_DES3_WRAP_TOKEN and BUREAU_DES3_WRAP_PIN.
The expected value is computed independently: pyemv derives MK-AC, cryptography enciphers it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from pkcs11 import Attribute, MechanismFlag
from pyemv import kd

from services.keymgmt.ceremony import CeremonyKeyType, KeyUsage, import_key_from_components
from services.keymgmt.emv import derive_icc_mk
from services.keymgmt.hsm import Hsm, des3_wrap, des3_wrap_missing, destroy_key
from tests.integration.hsm_fixtures import IMK_AC, hsm, hsm_token, soft_des_kcv, split  # noqa: F401

pytestmark = [
    pytest.mark.integration,
    pytest.mark.hsm_des3_wrap,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

K_DEK = bytes.fromhex("404142434445464748494A4B4C4D4E4F")  # GlobalPlatform's test key value
PAN, PSN = "4761739001010010", "01"


@pytest.fixture
def token(request: pytest.FixtureRequest) -> Iterator[Hsm]:
    """The token under test: the one named by BUREAU_DES3_WRAP_*, else the SoftHSM test token;
    skipped, with the reason, when it cannot wrap with CKM_DES3_ECB."""
    module = os.environ.get("BUREAU_DES3_WRAP_PKCS11_MODULE")
    if module:
        device = Hsm(
            module, os.environ["BUREAU_DES3_WRAP_TOKEN"], os.environ["BUREAU_DES3_WRAP_PIN"]
        )
        device.open()
    else:
        device = request.getfixturevalue("hsm")
    try:
        missing = device.run(des3_wrap_missing)
        if missing is not None:
            pytest.skip(f"hsm_des3_wrap: {missing}")
        yield device
    finally:
        if module:
            device.close()


def test_mk_ac_wrapped_under_a_des_k_dek_matches_3des_ecb_of_the_pyemv_key(token: Hsm) -> None:
    tag = uuid.uuid4().hex[:8]
    imk_label, kdek_label = f"des3wrap{tag}/IMK-AC/1", f"des3wrap{tag}/K-DEK/1"
    for label, value, usage in (
        (imk_label, IMK_AC, KeyUsage.DERIVE),
        (kdek_label, K_DEK, KeyUsage.WRAP),
    ):
        first = bytes.fromhex("0102030405060708090A0B0C0D0E0F10")
        token.run(
            import_key_from_components,
            label,
            CeremonyKeyType.DES2,
            split(value, first, "des"),
            usage,
            soft_des_kcv(value),
        )

    def wrap(h: Hsm) -> tuple[bytes, bool, bool]:
        # As perso does: a sensitive session MK with no usage at all, extractable only to wrap.
        extra = {Attribute.EXTRACTABLE: True}
        mk = derive_icc_mk(h, imk_label, PAN, PSN, caps=MechanismFlag(0), extra=extra)
        try:
            return (
                des3_wrap(h.key(kdek_label), mk),
                bool(mk[Attribute.SENSITIVE]),
                bool(mk[Attribute.ENCRYPT]),
            )
        finally:
            mk.destroy()

    try:
        wrapped, sensitive, usable = token.run(wrap)
    finally:
        for label in (imk_label, kdek_label):
            token.run(destroy_key, label)
    mk_ac = kd.derive_icc_mk_a(IMK_AC, PAN, PSN)
    enc = Cipher(TripleDES(K_DEK), modes.ECB()).encryptor()
    assert wrapped == enc.update(mk_ac) + enc.finalize()
    assert (sensitive, usable) == (True, False)
