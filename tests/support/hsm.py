"""A fresh SoftHSM token per test module, independent of the local stack.

The fixtures are registered once, in tests/conftest.py's pytest_plugins; import only helpers.
They are module-scoped: each test module had its own token when it imported them, and keeps it.
The token lives in a tmp dir with its own SOFTHSM2_CONF; the SoftHSM library is loaded from a
private copy so that its one C_Initialize (which reads SOFTHSM2_CONF) cannot collide with the
stack's token used by other tests of the same pytest process. The OpenSSL config written here
activates the default and legacy providers (single DES for the ISO 9797-1 retail MAC).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from services.keymgmt.emv.keys import ImkLabels
from services.keymgmt.hsm.p11 import SymKey, as_key
from services.keymgmt.hsm.session import BureauKeyKind, Hsm, generate_bureau_key, key_label
from services.keymgmt.keys.ceremony import (
    CeremonyKeyType,
    Component,
    KeyUsage,
    import_key_from_components,
)

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
ISSUER = "testbank"
USER_PIN = "24681357"
SO_PIN = "97531864"
OPENSSL_CNF = """openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
default = default_sect
legacy = legacy_sect
[default_sect]
activate = 1
[legacy_sect]
activate = 1
"""

# Published test keys: EMV's classic 0123..3210 (pyemv's and many issuers' examples) and
# GlobalPlatform's default 4041..4F as the test KMC (the virtual card factory uses it too).
IMK_AC = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
IMK_SMI = bytes.fromhex("89ABCDEF01234567FEDCBA9876543210")
IMK_SMC = bytes.fromhex("0123456789ABCDEF0123456789ABCDEF")
TEST_KMC = bytes.fromhex("404142434445464748494A4B4C4D4E4F")


def soft_des_kcv(key: bytes) -> str:
    """Oracle, in software: first 3 bytes of 3DES-ECB(key, 8 zero bytes)."""
    k = key + key[:8] if len(key) == 16 else key
    enc = Cipher(TripleDES(k), modes.ECB()).encryptor()
    return enc.update(bytes(8))[:3].hex().upper()


def soft_aes_cmac_kcv(key: bytes) -> str:
    mac = CMAC(algorithms.AES(key))
    mac.update(bytes(16))
    return mac.finalize()[:3].hex().upper()


def soft_aes_zero_kcv(key: bytes) -> str:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(bytes(16))[:3].hex().upper()


def split(key: bytes, first: bytes, kcv: str) -> list[Component]:
    """Two components (first, key xor first) with their custodian-declared KCVs."""
    second = bytes(a ^ b for a, b in zip(key, first, strict=True))
    kcv_fn = soft_des_kcv if kcv == "des" else soft_aes_cmac_kcv
    return [
        Component(bytearray(first), kcv_fn(first), "alice"),
        Component(bytearray(second), kcv_fn(second), "bob"),
    ]


@dataclass(frozen=True)
class HsmToken:
    module: str
    label: str
    user_pin: str
    so_pin: str
    softhsm_conf: Path
    openssl_conf: Path


@dataclass(frozen=True)
class IssuerKeys:
    issuer: str
    imks: ImkLabels
    kmc_label: str
    vault_label: str
    hmac_label: str


@pytest.fixture(scope="module")
def hsm_token(tmp_path_factory: pytest.TempPathFactory) -> HsmToken:
    if not Path(SOFTHSM_MODULE).exists() or shutil.which("softhsm2-util") is None:
        pytest.skip("SoftHSM2 is not installed (Debian softhsm2)")
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    ossl = root / "openssl.cnf"
    ossl.write_text(OPENSSL_CNF)
    module = root / "libsofthsm2-test.so"
    shutil.copyfile(SOFTHSM_MODULE, module)
    label = "cb-test"
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label]
        + ["--pin", USER_PIN, "--so-pin", SO_PIN],
        check=True,
        capture_output=True,
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
    )
    return HsmToken(str(module), label, USER_PIN, SO_PIN, conf, ossl)


@pytest.fixture(scope="module")
def hsm(hsm_token: HsmToken) -> Iterator[Hsm]:
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(hsm_token.softhsm_conf)
    device = Hsm(hsm_token.module, hsm_token.label, hsm_token.user_pin, str(hsm_token.openssl_conf))
    try:
        device.open()  # C_Initialize reads SOFTHSM2_CONF now, on the HSM worker
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous
    yield device
    device.close()


@pytest.fixture(scope="module")
def test_keys(hsm: Hsm) -> IssuerKeys:
    """The issuer's IMKs and the bureau KMC by ceremony; vault and HMAC keys generated."""
    imks = ImkLabels.for_issuer(ISSUER)
    for label, value, first in (
        (imks.ac, IMK_AC, bytes.fromhex("1F1F1F1F0E0E0E0E0101010101010101")),
        (imks.smi, IMK_SMI, bytes.fromhex("E0E0E0E0F1F1F1F10123456789ABCDEF")),
        (imks.smc, IMK_SMC, bytes.fromhex("5454545454545454FEFEFEFEFEFEFEFE")),
    ):
        hsm.run(
            import_key_from_components,
            label,
            CeremonyKeyType.DES2,
            split(value, first, "des"),
            KeyUsage.DERIVE,
            soft_des_kcv(value),
        )
    kmc_label = key_label("bureau", "KMC")
    hsm.run(
        import_key_from_components,
        kmc_label,
        CeremonyKeyType.AES128,
        split(TEST_KMC, bytes(range(0xA0, 0xB0)), "aes"),
        KeyUsage.DERIVE,
        soft_aes_cmac_kcv(TEST_KMC),
    )
    vault_label = key_label(ISSUER, "VAULT")
    hmac_label = key_label(ISSUER, "PANHASH")
    hsm.run(generate_bureau_key, vault_label, BureauKeyKind.VAULT_AES256)
    hsm.run(generate_bureau_key, hmac_label, BureauKeyKind.PAN_HMAC)
    return IssuerKeys(ISSUER, imks, kmc_label, vault_label, hmac_label)


def reveal(hsm: Hsm, key: SymKey) -> bytes:
    """TEST ORACLE ONLY: read an extractable key's value by wrapping it (RFC 3394) under a
    throw-away AES key the test knows, then unwrapping in software."""
    kek_value = bytes(range(16))
    kek = as_key(
        hsm.session.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType.AES,
                Attribute.VALUE: kek_value,
                Attribute.TOKEN: False,
                Attribute.WRAP: True,
            }
        )
    )
    try:
        wrapped = kek.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP)
    finally:
        kek.destroy()
    return aes_key_unwrap(kek_value, wrapped)
