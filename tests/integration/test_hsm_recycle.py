"""The Hsm frees SoftHSM's destroyed session objects (issue 17): SoftHSM 2.6.1 keeps each one
(~190 bytes) until C_Finalize, so per-card keys derived and destroyed grew keymgmt's C heap
by ~5 MiB per 1,000 cards; the Hsm re-initializes the library every `recycle_calls` calls.
On a fresh SoftHSM token of the module's own (tests/support/hsm.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag

from services.keymgmt.emv.keys import generate_arqc
from services.keymgmt.hsm.derive import des3_derive
from services.keymgmt.hsm.session import Hsm
from tests.support.hsm import HsmToken
from tests.support.memory import malloc_in_use

pytestmark = pytest.mark.integration

BASE = "recycle/BASE/1"
DERIVED_PER_CALL = 4
CALLS = 1500


def _derive_and_destroy(hsm: Hsm) -> None:
    """Per-card work in miniature: session keys derived from a token key, used, destroyed."""
    for n in range(DERIVED_PER_CALL):
        key = des3_derive(hsm.key(BASE), bytes([n]) * 16, MechanismFlag.ENCRYPT)
        key.encrypt(bytes(8), mechanism=Mechanism.DES3_ECB)
        key.destroy()


def _make_base(hsm: Hsm) -> None:
    if hsm.find_key(BASE) is None:
        hsm.session.generate_key(
            KeyType.DES2, label=BASE, store=True, capabilities=MechanismFlag.DERIVE,
            template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
        )  # fmt: skip


class Devices:
    """Hsm instances on the module's token, each closed once (at the latest after the test)."""

    def __init__(self, token: HsmToken) -> None:
        self.token, self.opened = token, list[Hsm]()

    def open(self, recycle_calls: int, pin: str | None = None) -> Hsm:
        t = self.token
        pin = t.user_pin if pin is None else pin
        device = Hsm(t.module, t.label, pin, str(t.openssl_conf), recycle_calls)
        device.open()
        self.opened.append(device)
        device.run(_make_base)
        return device

    def close(self, device: Hsm) -> None:
        self.opened.remove(device)
        device.close()


@pytest.fixture
def devices(hsm_token: HsmToken, monkeypatch: pytest.MonkeyPatch) -> Iterator[Devices]:
    """SOFTHSM2_CONF names the module's token for the whole test, as the stack's environment
    does for keymgmt (C_Initialize reads it again at every re-initialization)."""
    monkeypatch.setenv("SOFTHSM2_CONF", str(hsm_token.softhsm_conf))
    opened = Devices(hsm_token)
    yield opened
    for device in list(opened.opened):
        opened.close(device)


def _growth_per_object(device: Hsm) -> float:
    for _ in range(200):  # warm: the allocator's arena and SoftHSM's sets at their size
        device.run(_derive_and_destroy)
    before = malloc_in_use()
    for _ in range(CALLS):
        device.run(_derive_and_destroy)
    return (malloc_in_use() - before) / (CALLS * DERIVED_PER_CALL)


def test_destroyed_session_objects_are_freed_by_reinitializing(devices: Devices) -> None:
    kept = devices.open(0)  # the old behaviour: never re-initialized
    kept_per_object = _growth_per_object(kept)
    devices.close(kept)
    recycled = devices.open(250)
    recycled_per_object = _growth_per_object(recycled)
    assert recycled.recycles >= CALLS // 250
    assert recycled.run(_base_type) == KeyType.DES2  # the token key, by a fresh handle
    assert kept_per_object > 100  # SoftHSM 2.6.1 keeps each destroyed object, ~190 bytes
    assert recycled_per_object < kept_per_object / 5


def _base_type(hsm: Hsm) -> KeyType:
    return KeyType(hsm.key(BASE).key_type)


def test_single_des_arqcs_still_work_after_reinitializing(devices: Devices) -> None:
    """The OpenSSL legacy provider (single DES of the retail MAC) survives C_Finalize."""
    device = devices.open(2)
    pan, psn, atc, cdol1 = "4761739001010010", "01", bytes.fromhex("0001"), bytes(29)
    first = device.run(generate_arqc, BASE, pan, psn, atc, cdol1)
    for _ in range(5):
        assert device.run(generate_arqc, BASE, pan, psn, atc, cdol1) == first
    assert device.recycles >= 2


def test_a_library_shared_by_two_hsms_is_never_finalized(devices: Devices) -> None:
    # the second session needs no login of its own: PKCS#11 logs the application in, once
    first, second = devices.open(3), devices.open(3, pin="")
    for _ in range(10):
        first.run(_derive_and_destroy)
        second.run(_derive_and_destroy)  # its session still open: nobody finalized it
    assert (first.recycles, second.recycles) == (0, 0)
