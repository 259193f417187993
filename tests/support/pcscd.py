"""The local pcscd and its vpcd readers with the real card feeder, for the PC/SC tests (fixtures
registered in tests/conftest.py): the pcscd control script, APDUs and a connected client."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.pcsc import (
    CardConnection,
    CardRemoved,
    PcscClient,
    ReaderConfig,
    load_readers,
)
from tests.support.scp03_host import ISD_AID
from vcard.feeder import Feeder
from vcard.store import CardStore

REPO = Path(__file__).resolve().parents[2]


SCRIPT = REPO / "deploy" / "local" / "pcscd.sh"


GET_CPLC = bytes.fromhex("80CA9F7F00")


SELECT_ISD = bytes.fromhex("00A4040008") + ISD_AID + b"\x00"


def pcscd(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), command], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def readers() -> Iterator[list[ReaderConfig]]:
    started = pcscd("status").returncode != 0
    if started:
        result = pcscd("up")
        assert result.returncode == 0, result.stderr
    run_dir = Path(os.environ.get("BUREAU_RUN_DIR", REPO / ".run"))
    yield load_readers(run_dir / "pcsc" / "readers.json")
    if started:
        pcscd("down")


@pytest.fixture(scope="module")
async def feeder(
    readers: list[ReaderConfig], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Feeder]:
    specs = [{"name": r.name, "port": r.port} for r in readers]
    specs[-1]["mode"] = "manual"  # the last reader is the QA reader
    await readers_free(readers)
    instance = Feeder(specs, CardStore(tmp_path_factory.mktemp("cards")))
    await instance.start()
    yield instance
    await instance.stop()


async def readers_free(readers: list[ReaderConfig], patience: float = 60.0) -> None:
    """The vpcd readers are shared on this machine: let another process's cards leave first."""
    probe = PcscClient()
    deadline = time.monotonic() + patience
    try:
        while busy := [r.name for r in readers if (await probe.status(r.name)).present]:
            if time.monotonic() > deadline:
                pytest.fail(f"readers hold cards of another process (a feeder?): {busy}")
            await asyncio.sleep(0.5)
    finally:
        await probe.aclose()


@pytest.fixture(scope="module")
async def client(readers: list[ReaderConfig]) -> AsyncIterator[PcscClient]:
    instance = PcscClient()
    yield instance
    await instance.aclose()


async def connect(client: PcscClient, reader: str) -> CardConnection:
    """Connect to the card in `reader`, riding out a stale 'present' from an earlier card
    (pcscd notices a vanished card only at its next poll; SCardConnect then says no card)."""
    for _ in range(3):
        await client.wait_for_card(reader, timeout=5)
        try:
            return await client.connect(reader)
        except CardRemoved:
            await asyncio.sleep(0.5)
    return await client.connect(reader)
