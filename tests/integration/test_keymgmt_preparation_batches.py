"""Data preparation of a run of card.ordered in one call (shared.handlers.BatchHandler) on the real
Postgres and a fresh SoftHSM token: one read, the HSM work per card, one write; a card twice
in the run or already prepared gives nothing more; one bad card fails the run by name."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text

from services.keymgmt.keys.ceremonies import load_demo_keys
from services.keymgmt.settings import KeymgmtSettings
from shared import events
from shared.handlers import BatchHandler, PoisonEvent
from shared.service import ServiceRuntime
from tests.support.keymgmt import PAN19, ordered, vault

pytestmark = pytest.mark.integration


async def prepare_run(runtime: ServiceRuntime, run: list[events.CardOrdered]) -> list[Any]:
    """The consumer's batch call, in a transaction of its own; returns the card.prepared it
    emitted (a batch's first preparation also announces its stations: batch.assigned)."""
    (handler,) = runtime.handlers[events.CardOrdered]
    assert isinstance(handler, BatchHandler)
    async with runtime.unit_of_work() as uow:
        await handler.fn(uow, run)
    return [e for e in uow.emitted if not isinstance(e, events.BatchAssigned)]


async def prepared_rows(runtime: ServiceRuntime) -> dict[str, str]:
    async with runtime.engine.connect() as conn:
        rows = await conn.execute(text("SELECT card_id, key_scheme FROM prepared_cards"))
        return {str(card): scheme for card, scheme in rows.all()}


async def test_a_run_of_cards_is_prepared_once_each_in_its_own_trace(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
) -> None:
    runtime, http = keymgmt
    issuer = f"ia{unique}"
    await load_demo_keys(settings, issuer)
    cards = [await vault(http, unique, issuer) for _ in range(4)]
    cards.append(await vault(http, unique, issuer, PAN19))
    run = [ordered(card, issuer) for card in cards]
    traced = events.TraceContext(traceparent=f"00-{uuid.uuid4().hex}-{'ab' * 8}-01")
    run[2] = run[2].model_copy(update={"trace": traced})
    again = ordered(cards[1], issuer)  # another card.ordered for a card of the same run
    emitted = await prepare_run(runtime, [*run, again])
    assert sorted(str(e.card_id) for e in emitted) == sorted(c["card_id"] for c in cards)
    assert all(isinstance(e, events.CardPrepared) for e in emitted)
    by_card = {str(e.card_id): e for e in emitted}
    assert by_card[cards[2]["card_id"]].trace == traced  # each card.prepared in its own trace
    rows = await prepared_rows(runtime)
    assert rows == {c["card_id"]: "EMV-OPTION-A" for c in cards[:4]} | {
        cards[4]["card_id"]: "EMV-OPTION-B"
    }
    assert await prepare_run(runtime, run[:2]) == []  # prepared already: nothing more
    async with runtime.engine.connect() as conn:
        accesses = await conn.execute(
            text("SELECT count(*) FROM vault_access WHERE purpose = 'prepare'")
        )
        assert accesses.scalar_one() == 5


async def test_one_card_missing_from_the_vault_fails_the_run_by_name(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
) -> None:
    runtime, http = keymgmt
    issuer = f"ia{unique}"
    await load_demo_keys(settings, issuer)
    good = ordered(await vault(http, unique, issuer), issuer)
    stray = good.model_copy(update={"card_id": uuid.uuid4(), "event_id": uuid.uuid4()})
    with pytest.raises(PoisonEvent, match=f"card {stray.card_id} is not in the vault"):
        await prepare_run(runtime, [good, stray])
    assert await prepared_rows(runtime) == {}  # the run's transaction wrote nothing
    assert len(await prepare_run(runtime, [good])) == 1  # replayed alone, the good card goes
