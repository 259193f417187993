"""The mechanism inventory's verdicts on a fake token's mechanism list (the real SoftHSM token and
the real process start are tests/integration/test_keymgmt_production_start.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from pkcs11 import Mechanism, MechanismFlag

from services.keymgmt.hsm import mechanisms
from services.keymgmt.hsm.mechanisms import (
    LUNA_XOR_BASE_AND_KEY,
    HsmOperation,
    ProductionRefused,
    require_hsm_paths,
    survey,
)
from services.keymgmt.hsm.session import Hsm

F = MechanismFlag


@dataclass
class _Info:
    flags: int


@dataclass
class _Slot:
    offered: dict[int, int] = field(default_factory=dict)

    def get_mechanisms(self) -> set[int]:
        return set(self.offered)

    def get_mechanism_info(self, mechanism: int) -> _Info:
        return _Info(self.offered[int(mechanism)])


class _FakeHsm:
    def __init__(self, offered: dict[int, int]) -> None:
        slot = _Slot(offered)
        self.session: Any = type("S", (), {"token": type("T", (), {"slot": slot})()})()


def _hsm(offered: dict[int, int]) -> Hsm:
    return cast(Hsm, _FakeHsm(offered))


PAYMENT_HSM = {
    int(Mechanism.RSA_PKCS_OAEP): int(F.ENCRYPT | F.DECRYPT | F.WRAP | F.UNWRAP),
    LUNA_XOR_BASE_AND_KEY: int(F.DERIVE),
    int(Mechanism.DES3_ECB): int(F.ENCRYPT | F.DECRYPT | F.WRAP | F.UNWRAP),
    int(Mechanism.AES_ECB): int(F.ENCRYPT | F.DECRYPT),
    int(Mechanism.AES_ECB_ENCRYPT_DATA): int(F.DERIVE),
    int(Mechanism.XOR_BASE_AND_DATA): int(F.DERIVE),
}


def test_a_token_offering_every_mechanism_still_names_the_paths_keymgmt_lacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mechanisms, "des3_wrap_missing", lambda hsm: None)
    inventory = survey(_hsm(PAYMENT_HSM))
    assert inventory.in_hsm(HsmOperation.CEREMONY_UNWRAP)
    assert inventory.in_hsm(HsmOperation.CEREMONY_COMBINE)
    assert not inventory.in_hsm(HsmOperation.PIN_GENERATE)
    assert inventory.report()["ceremony-component-combine"] == "hsm"
    assert inventory.missing() == [
        "pin-generate: PKCS#11 defines no PIN generation mechanism and keymgmt has no"
        " payment-HSM binding for one",
        "pin-block-translate: keymgmt has no HSM PIN block translation path yet",
        "pin-mailer-decrypt: the PIN field is read from the decrypted block in keymgmt, not"
        " printed by the HSM",
        "sim-opc: keymgmt computes OPc from AES_Ki(OP) in process memory",
    ]


def test_missing_mechanisms_flags_and_a_refused_wrap_are_each_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mechanisms, "des3_wrap_missing", lambda hsm: "C_WrapKey refuses it")
    offered = dict(PAYMENT_HSM)
    del offered[LUNA_XOR_BASE_AND_KEY]
    offered[int(Mechanism.RSA_PKCS_OAEP)] = int(F.ENCRYPT | F.DECRYPT)
    inventory = survey(_hsm(offered), xor_mechanism=0x80000364)
    report = inventory.report()
    assert report["ceremony-component-unwrap"] == (
        "python fallback (missing: CKM_RSA_PKCS_OAEP with CKF_UNWRAP"
        " (the token does not give it CKF_UNWRAP))"
    )
    assert (
        "CKM_XOR_BASE_AND_KEY (0x80000364) (not in the token's mechanism list)"
        in (report["ceremony-component-combine"])
    )
    assert "C_WrapKey refuses it" in report["pin-block-translate"]
    with pytest.raises(ProductionRefused) as refused:
        require_hsm_paths(inventory, "prod")
    text = str(refused.value)
    assert text.startswith("keymgmt refuses to start in prod")
    assert all(missing in text for missing in inventory.missing())
