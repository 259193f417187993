"""QA's CA public keys (services/qa/emv_check.py ca_key_source): a key keymgmt gave is kept a
while across cards, an unknown one is never kept, and a withdrawn one is dropped once its time
is up."""

from __future__ import annotations

from datetime import date

import pytest

from services.qa.emv.oda import PublicKey
from services.qa.emv_check import ca_key_source
from shared.keymgmt.contract import ArqcRequest, CaPublicKey, ReadbackRequest, Verdict
from shared.keymgmt.errors import KeymgmtRefused

RID = bytes.fromhex("A000000003")


class CaKeys:
    """keymgmt's CA keys as QA asks for them, counting the questions."""

    def __init__(self) -> None:
        self.held: dict[str, str] = {}  # index -> modulus hex
        self.asked = 0

    async def ca_public_key(self, rid: str, ca_index: str) -> CaPublicKey:
        self.asked += 1
        path = f"/v1/ca-keys/{rid}/{ca_index}"
        if ca_index not in self.held:
            raise KeymgmtRefused(path, 404, None, "no such CA key")
        return CaPublicKey(
            rid=rid, ca_index=ca_index, modulus=self.held[ca_index], exponent="03",
            expires=date(2030, 12, 31),
        )  # fmt: skip

    async def readback(self, request: ReadbackRequest) -> Verdict:
        raise AssertionError("not asked here")

    async def verify_arqc(self, request: ArqcRequest) -> Verdict:
        raise AssertionError("not asked here")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_key_is_asked_once_while_it_is_kept() -> None:
    keys, clock = CaKeys(), Clock()
    keys.held["92"] = "C0FFEE"
    fetch = ca_key_source(keys, keep_s=60, clock=clock)
    first = await fetch(RID, 0x92)
    clock.now += 59
    assert await fetch(RID, 0x92) == first == PublicKey(bytes.fromhex("C0FFEE"), b"\x03")
    assert keys.asked == 1
    keys.held["92"] = "BEEF"  # replaced in keymgmt: used once the kept one's time is up
    clock.now += 2
    assert await fetch(RID, 0x92) == PublicKey(bytes.fromhex("BEEF"), b"\x03")
    assert keys.asked == 2


async def test_an_unknown_key_is_never_kept_and_a_withdrawn_one_goes() -> None:
    keys, clock = CaKeys(), Clock()
    fetch = ca_key_source(keys, keep_s=60, clock=clock)
    assert await fetch(RID, 0x94) is None
    keys.held["94"] = "AB"  # added in keymgmt: the next card uses it at once
    assert await fetch(RID, 0x94) == PublicKey(b"\xab", b"\x03")
    del keys.held["94"]
    clock.now += 61
    assert await fetch(RID, 0x94) is None
    assert await fetch(RID, 0x94) is None
    assert keys.asked == 4


async def test_refused_credentials_are_raised_not_taken_for_an_unknown_key() -> None:
    class Refusing(CaKeys):
        async def ca_public_key(self, rid: str, ca_index: str) -> CaPublicKey:
            raise KeymgmtRefused(f"/v1/ca-keys/{rid}/{ca_index}", 401, None, "bad token")

    with pytest.raises(KeymgmtRefused):
        await ca_key_source(Refusing())(RID, 0x92)
