"""Helpers shared by the electrical and QA integration tests (fixtures registered in
tests/conftest.py): the real card feeder (vcard.feeder) as a subprocess on a free port
driving the real vpcd readers of the local pcscd, the service runtimes under test, events in
and out of Kafka. keymgmt's test double is in electrical_keymgmt.py."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

from services.electrical.app import bootstrap
from services.electrical.settings import ElectricalSettings
from services.qa.app import bootstrap as qa_bootstrap
from services.qa.settings import QaSettings
from shared import events
from shared.bus import make_producer
from shared.pcsc import PcscClient, PcscError, ReaderConfig, load_readers
from shared.service import ServiceRuntime
from shared.settings import BureauSettings
from tests.conftest import REPO
from tests.support.bus import collect, wait_for
from tests.support.electrical_keymgmt import QA_TOKEN, STATION_TOKEN, KeymgmtTestDouble

ISSUER = "testbank"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class FeederProcess:
    url: str
    state_dir: Path
    station_readers: list[str]
    qa_reader: str
    http: httpx.AsyncClient

    async def arm(self, reader: str, **faults: Any) -> None:
        answer = await self.http.post(f"/readers/{quote(reader, safe='')}/faults", json=faults)
        answer.raise_for_status()

    async def eject(self, reader: str) -> dict[str, Any]:
        answer = await self.http.post(f"/readers/{quote(reader, safe='')}/eject", json={})
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    async def card(self, chip_serial: str) -> dict[str, Any]:
        answer = await self.http.get(f"/cards/{chip_serial}")
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result


async def next_card_with(
    feeder: FeederProcess, pcsc: PcscClient, reader: str, **faults: Any
) -> None:
    """Arm faults and eject, so the next card (the one carrying the faults) enters `reader`.
    pcscd may not report the swap when nobody spoke to the old card: the agent copes."""
    await feeder.arm(reader, **faults)
    await feeder.eject(reader)
    with contextlib.suppress(PcscError):
        await pcsc.wait_for_removal(reader, timeout=1.5)
    await pcsc.wait_for_card(reader, timeout=5)


def pcsc_readers() -> list[ReaderConfig]:
    readers = load_readers(os.environ["BUREAU_PCSC_READERS"])
    if len(readers) < 5:
        pytest.fail("the local pcscd must offer 6 readers (deploy/local/pcscd.sh)")
    return readers


async def wait_until_readers_free(client: PcscClient, readers: list[str], patience: float) -> None:
    """The vpcd readers are shared by everyone on this machine: wait for other tests' cards
    to leave before our feeder attaches its own."""
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        try:
            busy = [r for r in readers if (await client.status(r)).present]
        except PcscError as exc:
            pytest.fail(f"pcscd is not usable ({exc}); run deploy/local/stack.sh up")
        if not busy:
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"readers hold cards of another process (another feeder?): {busy}")
        await asyncio.sleep(1.0)


@asynccontextmanager
async def feeder_process(
    tmp: Path, client: PcscClient, *, stations: int, with_qa: bool
) -> AsyncIterator[FeederProcess]:
    readers = pcsc_readers()
    chosen = readers[:stations] + ([readers[4]] if with_qa else [])
    await wait_until_readers_free(client, [r.name for r in chosen], patience=180)
    port, log_file = free_port(), (tmp / "feeder.log").open("wb")
    spec = json.dumps([{"name": r.name, "port": r.port} for r in chosen])
    # Not `-m vcard.feeder`: run that way the module is loaded twice (__main__ and
    # vcard.feeder), the API's FeederError handler misses the errors __main__ raises, and a 404
    # or 409 arrives as a 500.
    entry = "import sys; from vcard.feeder import main; main(sys.argv[1:])"
    argv = [sys.executable, "-c", entry, "--readers", spec]
    argv += ["--state-dir", str(tmp / "cards"), "--port", str(port)]
    argv += ["--manual", readers[4].name] if with_qa else []
    process = subprocess.Popen(argv, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:

        async def healthy() -> bool:
            if process.poll() is not None:
                pytest.fail(f"the feeder exited ({process.returncode}); see {tmp / 'feeder.log'}")
            try:
                return (await http.get("/health")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for(healthy, timeout=20)
        station_names = [r.name for r in readers[:stations]]
        for name in station_names:
            await client.wait_for_card(name, timeout=10)
        yield FeederProcess(str(http.base_url), tmp / "cards", station_names, readers[4].name, http)
    finally:
        await http.aclose()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()


async def publish(
    settings: BureauSettings,
    stream: str,
    *items: events.Event,
    assign_to: tuple[str, ...] = ("station-a",),
) -> None:
    """Play another service: its events on its stream. On keymgmt's, each batch of the
    card.prepared among `items` is first assigned to `assign_to` (batch.assigned, revision 1),
    as keymgmt does with BUREAU_PERSO_STATIONS; `assign_to=()` publishes the items alone."""
    batches = {i.batch_id: i.issuer_id for i in items if isinstance(i, events.CardPrepared)}
    if stream == "keymgmt" and assign_to:
        items = (*(assigned(b, i, *assign_to) for b, i in batches.items()), *items)
    producer = make_producer(settings.kafka_bootstrap, "electrical-qa-tests")
    await producer.start()
    try:
        for item in items:
            await producer.send_and_wait(
                settings.topic(stream), events.encode_event(item), key=item.partition_key().encode()
            )
    finally:
        await producer.stop()


def assigned(
    batch_id: uuid.UUID, issuer_id: str, *stations: str, revision: int = 1
) -> events.BatchAssigned:
    """keymgmt's assignment of a batch to encoding stations (station planning)."""
    return events.BatchAssigned(
        issuer_id=issuer_id,
        actor="keymgmt",
        batch_id=batch_id,
        stations=list(stations),
        revision=revision,
    )


async def read_events(
    settings: BureauSettings,
    stream: str,
    until: Callable[[list[events.Event]], bool],
    timeout: float = 60.0,
) -> tuple[list[events.Event], list[bytes]]:
    """Events on a topic from the start, until the predicate holds; also the raw values."""
    records = await collect(
        settings.kafka_bootstrap,
        settings.topic(stream),
        lambda seen: until([events.decode_event(r.value) for r in seen]),
        timeout=timeout,
    )
    return [events.decode_event(r.value) for r in records], [bytes(r.value) for r in records]


def prepared(card_id: uuid.UUID, batch_id: uuid.UUID) -> events.CardPrepared:
    return events.CardPrepared(
        issuer_id=ISSUER,
        actor="keymgmt",
        card_id=card_id,
        batch_id=batch_id,
        product_id="testbank-visa",
        masked_pan="476173******0000",
        application="emv",
        key_scheme="EMV-OPTION-A",
    )


def print_face(
    spool_dir: Path, card_id: uuid.UUID, batch_id: uuid.UUID, chip_serial: str
) -> events.CardPrinted:
    """Play the graphical service and its IPP printer: the card printer's spool holds the job's
    document and its output (services/qa/print_check.py); card.printed announces the render."""
    image = io.BytesIO()
    Image.new("RGB", (64, 40), "#" + card_id.hex[:6]).save(image, format="PNG")
    face = image.getvalue()
    spool_dir.mkdir(parents=True, exist_ok=True)
    (spool_dir / f"1-card-{card_id}.png").write_bytes(face)
    (spool_dir / f"1-card-{card_id}.prn").write_bytes(face)
    return events.CardPrinted(
        issuer_id=ISSUER,
        actor="graphical",
        card_id=card_id,
        batch_id=batch_id,
        chip_serial=chip_serial,
        printer="test-card",
        image_sha256=hashlib.sha256(face).hexdigest(),
    )


def assert_no_clear_pan(pans: list[str], raw_events: list[bytes], logs: list[Any]) -> None:
    """Neither the events our services emit nor their log records carry a clear PAN (nor the
    chip's records, whose track 2 hex holds the PAN's digits)."""
    events_text = b"\n".join(raw_events)
    logs_text = "\n".join(str(r.__dict__) for r in logs)  # rendered once: O(records), not O(n*m)
    for pan in pans:
        assert pan.encode() not in events_text
        assert pan not in logs_text


def station(
    unique: str, keymgmt: KeymgmtTestDouble, feeder: FeederProcess, pcsc: PcscClient, readers: int
) -> ServiceRuntime:
    settings = ElectricalSettings(
        environment="test",
        topic_prefix=f"t{unique}",
        station_token=STATION_TOKEN,
        keymgmt_url=keymgmt.url,
        feeder_url=feeder.url,
        keymgmt_backoff_s=0.05,
        keymgmt_backoff_max_s=0.3,
        queue_poll_s=0.2,
    )
    readers_used = feeder.station_readers[:readers]
    return bootstrap(settings, schema=f"electrical_{unique}", readers=readers_used, pcsc=pcsc)


def qa_machine(
    unique: str, keymgmt: KeymgmtTestDouble, feeder: FeederProcess, pcsc: PcscClient, spool: Path
) -> ServiceRuntime:
    settings = QaSettings(
        environment="test",
        topic_prefix=f"t{unique}",
        service_tokens=f"qa={QA_TOKEN}",
        keymgmt_url=keymgmt.url,
        feeder_url=feeder.url,
        card_printer_spool=spool,
        queue_poll_s=0.2,
    )
    return qa_bootstrap(settings, schema=f"qa_{unique}", reader=feeder.qa_reader, pcsc=pcsc)


@pytest.fixture(scope="module", name="pcsc")
async def pcsc_client(stack_env: dict[str, str]) -> AsyncIterator[PcscClient]:
    pcsc_readers()  # points libpcsclite at the local pcscd
    client = PcscClient()
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
async def qa_feeder(
    pcsc: PcscClient, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[FeederProcess]:
    """The feeder of a QA machine alone (no station readers), one per test module."""
    async with feeder_process(
        tmp_path_factory.mktemp("feeder"), pcsc, stations=0, with_qa=True
    ) as process:
        yield process
