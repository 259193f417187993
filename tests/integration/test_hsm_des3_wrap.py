"""The production DES3 key wrap (hsm.des3_wrap, CKM_DES3_ECB): DGI 8000 for a DES-keyed card
(SCP02 K_DEK) is each per-card master key enciphered with 3DES-ECB under K_DEK, made by
C_WrapKey without the key ever in clear.

Marked `hsm_des3_wrap`: it runs on any token whose mechanism list gives CKM_DES3_ECB the
CKF_WRAP flag and whose C_WrapKey accepts it (hsm.des3_wrap_missing checks both), and is
skipped with the reason on the others; SoftHSM 2.6.1 refuses the wrap. The token is the one
BUREAU_DES3_WRAP_PKCS11_MODULE, BUREAU_DES3_WRAP_TOKEN and BUREAU_DES3_WRAP_PIN name (a PIN
left empty: no login), else NSS softoken (Debian libnss3) loaded through a small init shim
built here with gcc (nss_softokn_shim.c), else none (skipped). A second test checks that the
detection tells the truth on the SoftHSM token: reported missing there, and the wrap fails.
The expected value is computed independently: pyemv derives MK-AC, cryptography enciphers it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pkcs11.exceptions
import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass
from pyemv import kd

from services.keymgmt.emv.keys import derive_icc_mk
from services.keymgmt.hsm.p11 import as_key
from services.keymgmt.hsm.session import Hsm, des3_wrap, des3_wrap_missing, destroy_key
from tests.support.hsm import IMK_AC

pytestmark = [
    pytest.mark.integration,
    pytest.mark.hsm_des3_wrap,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

K_DEK = bytes.fromhex("404142434445464748494A4B4C4D4E4F")  # GlobalPlatform's test key value
PAN, PSN = "4761739001010010", "01"


SHIM = Path(__file__).with_name("nss_softokn_shim.c")
NSS_CRYPTO_TOKEN = "NSS Generic Crypto Services"  # session objects, no login


def nss_softoken_module(tmp: Path) -> str | None:
    """NSS softoken (Debian libnss3; its C_WrapKey takes CKM_DES3_ECB) behind the init shim,
    built with gcc when the compiler, NSS's headers and library are here; else None."""
    headers = Path("/usr/include/nss/pkcs11.h")
    softokn = next(iter(sorted(Path("/usr/lib").glob("*/libsoftokn3.so"))), None)
    gcc = shutil.which("gcc")
    if gcc is None or softokn is None or not headers.exists():
        return None
    module = tmp / "libnss-softokn-shim.so"
    flags = ["-shared", "-fPIC", "-O2", "-I/usr/include/nss", "-I/usr/include/nspr"]
    subprocess.run([gcc, *flags, "-o", str(module), str(SHIM), "-ldl"], check=True, timeout=60)
    (tmp / "nssdb").mkdir()
    os.environ["NSS_SHIM_SOFTOKN"] = str(softokn)
    os.environ["NSS_SHIM_PARAMS"] = (
        f"configdir='sql:{tmp / 'nssdb'}' certPrefix='' keyPrefix='' secmod='secmod.db'"
        " flags=noModDB"
    )
    return str(module)


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hsm]:
    """A token that has CKM_DES3_ECB wrap: the one named by BUREAU_DES3_WRAP_*, else NSS
    softoken through the shim; skipped, with the reason, when there is none or it cannot."""
    module = os.environ.get("BUREAU_DES3_WRAP_PKCS11_MODULE")
    label, pin = NSS_CRYPTO_TOKEN, ""
    if module:
        label, pin = os.environ["BUREAU_DES3_WRAP_TOKEN"], os.environ["BUREAU_DES3_WRAP_PIN"]
    else:
        module = nss_softoken_module(tmp_path_factory.mktemp("nss"))
    if module is None:
        pytest.skip("hsm_des3_wrap: no token with CKM_DES3_ECB wrap here (set BUREAU_DES3_WRAP_*)")
    device = Hsm(module, label, pin)
    device.open()
    try:
        missing = device.run(des3_wrap_missing)
        if missing is not None:
            pytest.skip(f"hsm_des3_wrap: {missing}")
        yield device
    finally:
        device.close()


def _test_key(h: Hsm, label: str, value: bytes, usage: Attribute) -> None:
    """A published test value as a sensitive, non-extractable session key (test token only;
    production keys come by ceremony)."""
    h.session.create_object(
        {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.DES2,
            Attribute.LABEL: label,
            Attribute.VALUE: value,
            Attribute.TOKEN: False,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            usage: True,
        }
    )


def test_mk_ac_wrapped_under_a_des_k_dek_matches_3des_ecb_of_the_pyemv_key(token: Hsm) -> None:
    tag = uuid.uuid4().hex[:8]
    imk_label, kdek_label = f"des3wrap{tag}/IMK-AC/1", f"des3wrap{tag}/K-DEK/1"

    def wrap(h: Hsm) -> tuple[bytes, bool, bool]:
        _test_key(h, imk_label, IMK_AC, Attribute.DERIVE)
        _test_key(h, kdek_label, K_DEK, Attribute.WRAP)
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
            for label in (imk_label, kdek_label):
                destroy_key(h, label)

    wrapped, sensitive, usable = token.run(wrap)
    mk_ac = kd.derive_icc_mk_a(IMK_AC, PAN, PSN)
    enc = Cipher(TripleDES(K_DEK), modes.ECB()).encryptor()
    assert wrapped == enc.update(mk_ac) + enc.finalize()
    assert (sensitive, usable) == (True, False)


def test_the_detection_tells_the_truth_about_the_softhsm_token(hsm: Hsm) -> None:
    """SoftHSM 2.6.1 lacks the wrap: the detector must say so, and the wrap really fail."""

    def probe(h: Hsm) -> tuple[str | None, str]:
        missing = des3_wrap_missing(h)
        template = {Attribute.TOKEN: False, Attribute.EXTRACTABLE: True}
        kek = h.session.generate_key(
            KeyType.DES2, capabilities=MechanismFlag.WRAP, template=template
        )
        key = h.session.generate_key(KeyType.DES2, template=template)
        try:
            des3_wrap(as_key(kek), as_key(key))
            outcome = "wrapped"
        except pkcs11.exceptions.PKCS11Error as exc:
            outcome = exc.__class__.__name__
        finally:
            kek.destroy()
            key.destroy()
        return missing, outcome

    missing, outcome = hsm.run(probe)
    assert (missing is None) == (outcome == "wrapped"), (missing, outcome)
