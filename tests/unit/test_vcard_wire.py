"""vcard.wire and vcard.feeder against a fake vpcd on loopback (no pcscd needed).

The fake plays vpcd's side of the protocol: it listens, accepts the card, sends length-prefixed
control bytes and APDUs, and sees card removal as end of stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from vcard.api import create_app
from vcard.card import ATR_T1, Faults, VirtualCard
from vcard.crypto import TEST_KMC
from vcard.feeder import Feeder
from vcard.store import CardStore
from vcard.wire import CardLink


class FakeVpcd:
    def __init__(self) -> None:
        self.connections: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.connections.put((reader, writer))

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def next_card(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(self.connections.get(), 5)

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()


async def exchange(
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], payload: bytes
) -> bytes | None:
    reader, writer = conn
    writer.write(len(payload).to_bytes(2, "big") + payload)
    await writer.drain()
    if len(payload) == 1 and payload[0] != 0x04:
        return None  # power on/off/reset have no reply
    try:
        size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 5), "big")
    except asyncio.IncompleteReadError:
        return b""  # the card left
    return await reader.readexactly(size)


@pytest.fixture
async def vpcd() -> AsyncIterator[FakeVpcd]:
    fake = FakeVpcd()
    await fake.start()
    yield fake
    await fake.close()


async def test_card_speaks_vpcd_protocol(vpcd: FakeVpcd, tmp_path: Path) -> None:
    store = CardStore(tmp_path)
    card = VirtualCard(store.manufacture(TEST_KMC), store.save)
    link = CardLink(card, vpcd.port)
    link.start()
    conn = await vpcd.next_card()
    assert await exchange(conn, b"\x04") == ATR_T1
    await exchange(conn, b"\x01")
    assert await exchange(conn, b"\x04") == ATR_T1  # a reply orders us after the power-on
    assert card.powered
    response = await exchange(conn, bytes.fromhex("80CA9F7F00"))
    assert response is not None
    assert response[-2:] == b"\x90\x00"
    assert len(response) == 47
    await exchange(conn, b"\x00")
    await exchange(conn, b"\x04")
    assert not card.powered
    await link.detach()
    assert await conn[0].read() == b""  # removal = the card closes its socket


async def test_removal_fault_and_reconnect_after_vpcd_loss(vpcd: FakeVpcd, tmp_path: Path) -> None:
    store = CardStore(tmp_path)
    removed: list[CardLink] = []
    card = VirtualCard(store.manufacture(TEST_KMC), store.save, Faults(remove_after_apdus=2))
    link = CardLink(card, vpcd.port, retry_interval=0.02, on_removed=removed.append)
    link.start()
    conn = await vpcd.next_card()
    conn[1].close()  # vpcd went away (pcscd restart): the card stays and reconnects
    conn = await vpcd.next_card()
    assert link.connections == 2
    first = await exchange(conn, bytes.fromhex("80CA9F7F00"))
    assert first is not None
    assert first.endswith(b"\x90\x00")
    second = await exchange(conn, bytes.fromhex("00A4040007A000000003101000"))
    assert second is not None
    assert second.endswith(b"\x90\x00")
    assert await conn[0].read() == b""
    await asyncio.sleep(0.05)
    assert removed == [link]
    assert not link.active


async def test_feeder_hopper_eject_insert_faults_over_http(tmp_path: Path) -> None:
    fakes = [FakeVpcd(), FakeVpcd()]
    for fake in fakes:
        await fake.start()
    readers = [
        {"name": "Station A 00 00", "port": fakes[0].port},
        {"name": "QA 00 00", "port": fakes[1].port, "mode": "manual"},
    ]
    feeder = Feeder(readers, CardStore(tmp_path), hopper_capacity=3)
    await feeder.start()
    transport = httpx.ASGITransport(app=create_app(feeder))
    async with httpx.AsyncClient(transport=transport, base_url="http://feeder") as http:
        assert (await http.get("/health")).json()["status"] == "ok"
        first = await feeder.wait_attached("Station A 00 00")
        state = (await http.get("/readers")).json()
        assert state["hopper_remaining"] == 2
        assert state["readers"][1]["card"] is None
        armed = await http.post(f"/readers/{fakes[0].port}/faults", json={"wrong_kmc": True})
        assert armed.json()["armed_faults"]["kmc_hex"]
        out = (await http.post("/readers/Station%20A%2000%2000/eject")).json()
        assert out["ejected"] == first
        assert out["inserted"] not in (None, first)
        second = await feeder.wait_attached(fakes[0].port)
        assert feeder.slot(fakes[0].port).faults.armed is False  # consumed by the new card
        busy = await http.post("/readers/QA%2000%2000/insert", json={"chip_serial": second})
        assert busy.status_code == 409  # a card is in one reader at a time
        unknown = await http.post("/readers/QA%2000%2000/insert", json={"chip_serial": "0" * 12})
        assert unknown.status_code == 404
        ok = await http.post("/readers/QA%2000%2000/insert", json={"chip_serial": first})
        assert ok.json() == {"reader": "QA 00 00", "inserted": first}
        assert await feeder.wait_attached("QA 00 00") == first
        info = (await http.get(f"/cards/{first}")).json()
        assert info["reader"] == "QA 00 00"
        assert info["lifecycle"] == "blank"
        qa_out = (await http.post("/readers/QA%2000%2000/eject")).json()
        assert qa_out == {"reader": "QA 00 00", "ejected": first, "inserted": None}
        await http.post(f"/readers/{fakes[0].port}/eject")
        await http.post(f"/readers/{fakes[0].port}/eject")
        final = (await http.get("/readers")).json()
        assert final["hopper_remaining"] == 0
        assert final["blanks_fed"] == 3
        assert final["readers"][0]["card"] is None  # the hopper ran dry
        assert (await http.get("/readers/nope")).status_code == 404
    await feeder.stop()
    for fake in fakes:
        await fake.close()
