"""An order that fails after vaulting takes its records back out of the vault: on a refusal, an
error, or a cancelled request; a committed order keeps them; a vault that cannot be reached
for the deletion is logged, never hidden."""

from __future__ import annotations

import asyncio
import logging
import pathlib
import uuid

import pytest

from services.intake.orders import FORGET_CHUNK, Vaulted, forgotten_unless_committed
from shared.errors import Conflict
from shared.keymgmt.contract import VaultForget, VaultForgotten, VaultStored


class FakeVault:
    def __init__(self, fail: bool = False) -> None:
        self.forgotten: list[uuid.UUID] = []
        self.fail = fail
        self.calls = 0

    async def store_cards_json(self, body: bytes) -> VaultStored:
        raise NotImplementedError

    async def forget_cards(self, request: VaultForget) -> VaultForgotten:
        if self.fail:
            raise ConnectionError("keymgmt down")
        self.forgotten.extend(request.card_ids)
        self.calls += 1
        return VaultForgotten(forgotten=len(request.card_ids))

    async def aclose(self) -> None:
        return None


IDS = [uuid.uuid4() for _ in range(3)]


async def failing_order(vault: FakeVault, error: Exception, ids: list[uuid.UUID] = IDS) -> None:
    async with forgotten_unless_committed(vault, "acme") as vaulted:
        vaulted.extend(ids[:2])
        vaulted.extend(ids[2:])
        raise error


async def test_a_failure_after_vaulting_forgets_every_id() -> None:
    vault = FakeVault()
    with pytest.raises(Conflict):
        await failing_order(vault, Conflict("a concurrent request won"))
    assert vault.forgotten == IDS


async def test_a_committed_order_keeps_its_records() -> None:
    vault = FakeVault()
    async with forgotten_unless_committed(vault, "acme") as vaulted:
        vaulted.extend(IDS)
    assert vault.forgotten == []


async def test_a_cancelled_request_still_forgets() -> None:
    vault = FakeVault()
    started = asyncio.Event()

    async def order() -> None:
        async with forgotten_unless_committed(vault, "acme") as vaulted:
            vaulted.extend(IDS)
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(order())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert vault.forgotten == IDS


async def test_an_unreachable_vault_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(RuntimeError), caplog.at_level(logging.ERROR):
        await failing_order(FakeVault(fail=True), RuntimeError("database gone"))
    assert "could not be deleted" in caplog.text


def test_ids_are_spooled_to_a_file_and_read_back_in_chunks(tmp_path: pathlib.Path) -> None:
    vaulted = Vaulted(str(tmp_path))
    ids = [uuid.uuid4() for _ in range(5)]
    vaulted.extend(ids[:3])
    vaulted.extend(ids[3:])
    assert len(vaulted) == 5
    assert list(vaulted.chunks(2)) == [ids[:2], ids[2:4], ids[4:]]
    assert list(vaulted.chunks(10)) == [ids]  # read again from the start
    assert not list(tmp_path.iterdir())  # unlinked at once: nothing left if the process dies
    vaulted.close()
    assert list(Vaulted().chunks(3)) == []


async def test_a_large_failed_order_is_forgotten_in_bounded_calls() -> None:
    vault = FakeVault()
    ids = [uuid.uuid4() for _ in range(FORGET_CHUNK + 7)]
    with pytest.raises(Conflict):
        await failing_order(vault, Conflict("refused after vaulting"), ids)
    assert vault.forgotten == ids
    assert vault.calls == 2
