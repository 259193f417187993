"""SIM secrets in the HSM against 3GPP TS 35.207/35.208 test set 1.

Oracle: Milenage f1-f5 (TS 35.206) written here with `cryptography`'s AES, checked against
the published test set, fed with the OPc the HSM computed. Generated Ki/OPc are read back
from the operator's wrap with the test-known transport key (RFC 3394, in software).
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.exceptions import PKCS11Error

from services.keymgmt.hsm.p11 import SymKey, as_key
from services.keymgmt.hsm.session import BureauKeyKind, Hsm, generate_bureau_key, key_label
from services.keymgmt.keys.ceremony import CeremonyKeyType, KeyUsage, import_key_from_components
from services.keymgmt.sim.secrets import (
    compute_opc,
    generate_ki,
    generate_sim_secrets,
    make_iccid,
    make_imsi,
    protect_sim_secrets,
)
from shared.pan import luhn_check_digit
from tests.support.hsm import soft_aes_cmac_kcv, split
from tests.support.milenage import _aes, _xor, milenage

pytestmark = pytest.mark.integration

# 3GPP TS 35.208 test set 1
K = bytes.fromhex("465b5ce8b199b49faa5f0a2ee238a6bc")
RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
SQN, AMF = bytes.fromhex("ff9bb4d0b607"), bytes.fromhex("b9b9")
OP = bytes.fromhex("cdc202d5123e20f62b6d676ac72cb318")
OPC = bytes.fromhex("cd63cb71954a9f4e48a5994e37a02baf")
F1, F1S = "4a9ffac354dfafb3", "01cfaf9ec4e871e9"
F2, F5, F5S = "a54211d5e3ba50bf", "aa689c648370", "451e8beca43b"
F3, F4 = "b40ba9a3c58b2a05bbf0d987b21bf8cb", "f769bcd751044604127672711c6d3441"
TRANSPORT = bytes.fromhex("000102030405060708090A0B0C0D0E0F")  # test operator transport key


@pytest.fixture(scope="module")
def sim_keys(hsm: Hsm) -> tuple[str, str]:
    transport = key_label("simop", "TRANSPORT")
    comps = split(TRANSPORT, bytes(range(0x40, 0x50)), "aes")
    hsm.run(
        import_key_from_components,
        transport,
        CeremonyKeyType.AES128,
        comps,
        KeyUsage.WRAP,
        soft_aes_cmac_kcv(TRANSPORT),
    )
    storage = key_label("simbureau", "SIMKEK")
    hsm.run(generate_bureau_key, storage, BureauKeyKind.SIM_KEK_AES256)
    return storage, transport


def _known_ki(h: Hsm) -> SymKey:
    return as_key(
        h.session.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType.AES,
                Attribute.VALUE: K,
                Attribute.TOKEN: False,
                Attribute.ENCRYPT: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: True,
            }
        )
    )


def test_software_milenage_reproduces_test_set_1() -> None:
    assert _xor(_aes(K, OP), OP) == OPC
    want = {"f1": F1, "f1*": F1S, "f2": F2, "f3": F3, "f4": F4, "f5": F5, "f5*": F5S}
    assert milenage(K, OPC, RAND, SQN, AMF) == want


def test_hsm_opc_matches_published_and_wraps_for_the_operator(
    hsm: Hsm,
    sim_keys: tuple[str, str],
) -> None:
    storage, transport = sim_keys

    def run(h: Hsm) -> tuple[bytes, bytes, bytes]:
        ki = _known_ki(h)
        try:
            opc = compute_opc(ki, OP)
            secrets = protect_sim_secrets(h, ki, OP, storage, transport)
            return bytes(opc), secrets.ki_transport, secrets.opc_transport
        finally:
            ki.destroy()

    opc, ki_wrapped, opc_wrapped = hsm.run(run)
    assert opc == OPC
    assert aes_key_unwrap(TRANSPORT, ki_wrapped) == K
    assert aes_key_unwrap(TRANSPORT, opc_wrapped) == OPC
    assert milenage(K, aes_key_unwrap(TRANSPORT, opc_wrapped), RAND, SQN, AMF)["f2"] == F2


def test_generated_ki_and_opc_are_consistent_and_distinct(
    hsm: Hsm,
    sim_keys: tuple[str, str],
) -> None:
    storage, transport = sim_keys
    sims = hsm.run(generate_sim_secrets, OP, storage, transport, 5)
    kis = [aes_key_unwrap(TRANSPORT, s.ki_transport) for s in sims]
    assert len(set(kis)) == 5
    for sim, ki in zip(sims, kis, strict=True):
        assert aes_key_unwrap(TRANSPORT, sim.opc_transport) == _xor(_aes(ki, OP), OP)
        assert sim.ki_stored != sim.ki_transport  # another key wraps the stored copy
        rand = os.urandom(16)
        assert len(milenage(ki, _xor(_aes(ki, OP), OP), rand, SQN, AMF)["f2"]) == 16


def test_ki_is_sensitive_and_only_leaves_wrapped(hsm: Hsm) -> None:
    def run(h: Hsm) -> tuple[bool, bool, bool]:
        ki = generate_ki(h)
        try:
            flags = (
                bool(ki[Attribute.SENSITIVE]),
                bool(ki[Attribute.TOKEN]),
                bool(ki[Attribute.DECRYPT]),
            )
            with pytest.raises(PKCS11Error):
                ki[Attribute.VALUE]  # noqa: B018
            return flags
        finally:
            ki.destroy()

    assert hsm.run(run) == (True, False, False)  # a session object that never decrypts


def test_luhn_iccid_and_imsi() -> None:
    assert luhn_check_digit("7992739871") == "3"  # the textbook Luhn example
    iccid = make_iccid("8944110", 42)
    assert (len(iccid), iccid[:-1]) == (19, "894411000000000042")
    digits = [int(c) for c in reversed(iccid)]
    doubled = [d if i % 2 == 0 else (2 * d - 9 if d > 4 else 2 * d) for i, d in enumerate(digits)]
    assert sum(doubled) % 10 == 0
    assert make_imsi("23415", 42) == "234150000000042"
    with pytest.raises(ValueError, match="89"):
        make_iccid("1234", 1)
    with pytest.raises(ValueError, match="MSIN"):
        make_imsi("23415", 10**10)
