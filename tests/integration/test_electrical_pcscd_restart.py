"""pcscd restarted in the middle of a batch, under a station agent personalising on four readers
(real pcscd, vpcd readers, the real feeder, Kafka, Postgres, keymgmt's HSM core behind the test
double). The restart may catch a chip mid-script: that card must end spoiled, never encoded
twice and never lost, and the agent must go on with the rest of the batch on its own."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared import events
from shared.pcsc import PcscClient
from tests.conftest import running
from tests.support.electrical import (
    FeederProcess,
    feeder_process,
    prepared,
    publish,
    read_events,
    station,
)
from tests.support.electrical_keymgmt import KeymgmtTestDouble
from tests.support.pcscd import pcscd

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]


log = logging.getLogger(__name__)
CARDS = 32
RESTART_AFTER = 6  # encoded cards before pcscd goes down


def restart_step(command: str) -> None:
    done = pcscd(command)
    assert done.returncode == 0, f"pcscd.sh {command}: {done.stderr}"


@pytest.fixture
async def feeder(pcsc: PcscClient, tmp_path: Path) -> AsyncIterator[FeederProcess]:
    async with feeder_process(tmp_path, pcsc, stations=4, with_qa=False) as process:
        yield process


def terminal(seen: list[events.Event]) -> dict[uuid.UUID, list[events.Event]]:
    outcomes: dict[uuid.UUID, list[events.Event]] = {}
    for event in seen:
        if isinstance(event, events.CardEncoded | events.CardSpoiled):
            outcomes.setdefault(event.card_id, []).append(event)
    return outcomes


async def test_a_pcscd_restart_mid_batch_loses_no_card_and_encodes_none_twice(
    unique: str, station_keymgmt: KeymgmtTestDouble, feeder: FeederProcess, pcsc: PcscClient
) -> None:
    cards = {station_keymgmt.add_card() for _ in range(CARDS)}
    batch = uuid.uuid4()
    electrical = station(unique, station_keymgmt, feeder, pcsc, readers=4)
    try:
        async with running(electrical):
            await publish(electrical.settings, "keymgmt", *(prepared(c, batch) for c in cards))
            before, _ = await read_events(
                electrical.settings,
                "electrical",
                lambda s: sum(isinstance(e, events.CardEncoded) for e in s) >= RESTART_AFTER,
                timeout=120,
            )
            restart_step("down")
            await asyncio.sleep(1.0)
            restart_step("up")
            out, _ = await read_events(
                electrical.settings,
                "electrical",
                lambda s: set(terminal(s)) >= cards,
                timeout=240,
            )
    finally:
        restart_step("up")  # idempotent: whatever happened, leave the machine's pcscd running

    outcomes = terminal(out)
    assert set(outcomes) == cards, "every card of the batch has an outcome"
    doubled = {c: [e.type for e in evs] for c, evs in outcomes.items() if len(evs) != 1}
    assert not doubled, f"cards with more than one outcome: {doubled}"
    encoded = [e for e in out if isinstance(e, events.CardEncoded)]
    spoiled = [e for e in out if isinstance(e, events.CardSpoiled)]
    serials = Counter(e.chip_serial for e in encoded) + Counter(
        e.chip_serial for e in spoiled if e.chip_serial is not None
    )
    assert all(n == 1 for n in serials.values()), f"a chip bound twice: {serials}"
    # Only chips whose whole script ran are called encoded ...
    for event in encoded:
        assert (await feeder.card(event.chip_serial))["lifecycle"] == "personalized"
    # ... spoiled cards name why, and the agent went on personalising after the restart.
    assert all(e.stage == "electrical" and e.reason for e in spoiled)
    assert len(encoded) > len(before), "the agent encoded cards after pcscd came back"
    assert len(spoiled) <= 4, f"more spoiled than readers busy at the restart: {spoiled}"
    log.warning(
        "pcscd restart: %d encoded before it, %d in all, %d spoiled",
        len(before),
        len(encoded),
        len(spoiled),
    )
