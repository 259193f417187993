"""PostgreSQL stopped hard mid-batch (`pg_ctl stop -m immediate`) and started again 10 s later:
while it is down intake answers 503 with Retry-After (not 500); within 30 s of its return every
service's /ready is green, with no process restarted by hand; and the batch closes, every card
accounted for. PostgreSQL is always started again, whatever the test found."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from demo.client import Bureau, demo_cards
from tests.support.fault_check import not_ready
from tests.support.postgres_fault import start_postgres, stop_postgres_hard

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

CARDS = 30
OUTAGE_S = 10.0
READY_WITHIN_S = 30.0


async def test_a_hard_postgres_stop_mid_batch_heals_without_a_hand(
    bureau: Bureau, e2e_env: dict[str, str]
) -> None:
    run_dir = e2e_env["BUREAU_RUN_DIR"]
    token = await bureau.onboard_issuer("e2e-bank", "E2E Bank", "e2e-pgfault")
    await bureau.receive_stock("e2e-bank", "e2e-pgfault", CARDS)
    order = await bureau.post_order(
        token, "e2e-pgfault", demo_cards(CARDS, seed=int.from_bytes(os.urandom(4), "big"))
    )
    batch = str(order["batch_id"])

    async def started() -> bool:
        view = await bureau.reconciliation(batch)
        return view is not None and view["status"] != "closed"

    async with asyncio.timeout(120):
        while not await started():
            await asyncio.sleep(0.5)
    try:
        stop_postgres_hard(run_dir)
        await asyncio.sleep(2.0)
        async with bureau._client(bureau.urls.intake, token) as issuer:
            answer = await issuer.get(f"/v1/orders/{order['order_id']}")
        assert answer.status_code == 503, answer.text
        assert int(answer.headers["Retry-After"]) > 0
        await asyncio.sleep(OUTAGE_S - 2.0)
    finally:
        start_postgres(run_dir)
    back = time.monotonic()
    problems = await not_ready()
    while problems and time.monotonic() - back < READY_WITHIN_S:
        await asyncio.sleep(0.5)
        problems = await not_ready()
    assert problems == {}, f"not ready {READY_WITHIN_S} s after the database came back"

    view = await bureau.wait_for_batch(batch, {"closed", "held"}, timeout=420)
    assert view["status"] == "closed", view
    assert view["problems"] == []
    assert all(not ids for ids in view["missing"].values())
