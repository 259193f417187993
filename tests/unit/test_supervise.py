"""The one supervision rule (shared/supervise.py): a failing task is restarted with capped,
jittered backoff and resumes by itself; one log line when its streak starts and one when it runs
again; a task that cannot run gives up (liveness fails, the process is told to end); stop()
ends a task even when it swallowed its cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import httpx
import pytest

from shared.service import ServiceRuntime, create_app
from shared.settings import BureauSettings
from shared.supervise import Supervision, Supervisor

FAST = Supervision(initial_s=0.01, cap_s=0.04, healthy_after_s=0.2, give_up_after_s=60.0)


def test_backoff_doubles_up_to_its_cap_with_jitter_between_half_and_all() -> None:
    rule = Supervision(initial_s=0.5, cap_s=10.0)
    assert [rule.delay(n, lambda: 1.0) for n in (1, 2, 3, 4, 5, 6, 9)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        10.0,
        10.0,
    ]
    assert rule.delay(3, lambda: 0.0) == 1.0  # half of the ceiling at least
    assert rule.delay(30, lambda: 0.0) == 5.0


async def test_a_failing_task_is_restarted_until_its_dependency_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A loop that fails five times (its database away) runs again by itself; the log holds one
    line for the failure streak and one for the recovery, not one per retry."""
    calls = 0
    running = asyncio.Event()
    gave_up: list[str] = []

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls <= 5:
            raise ConnectionRefusedError("database away")
        running.set()
        await asyncio.Event().wait()

    supervisor = Supervisor("qa", FAST, gave_up.append)
    with caplog.at_level(logging.INFO, logger="shared.supervise"):
        supervisor.spawn("run", flaky)
        await asyncio.wait_for(running.wait(), 5)
        assert supervisor.problems() == []
        await asyncio.sleep(FAST.healthy_after_s + 0.1)
        await supervisor.stop()
    assert calls == 6
    assert gave_up == []
    lines = [r.getMessage() for r in caplog.records if r.name == "shared.supervise"]
    assert lines == [
        "task qa:run failed; restarting it with backoff until it runs again",
        lines[1],
    ]
    assert lines[1].startswith("task qa:run running again after ")
    assert lines[1].endswith(" and 5 restarts")


async def test_readiness_names_a_task_waiting_to_be_restarted() -> None:
    async def broken() -> None:
        raise RuntimeError("no printer configured")

    supervisor = Supervisor("graphical", Supervision(initial_s=5, cap_s=5), lambda _t: None)
    supervisor.spawn("spooler", broken)
    await asyncio.sleep(0.05)
    (problem,) = supervisor.problems()
    assert problem.startswith("task restarting: graphical:spooler (0 restarts; RuntimeError(")
    await supervisor.stop()


async def test_a_task_that_returns_is_restarted_too() -> None:
    calls = 0

    async def ends() -> None:
        nonlocal calls
        calls += 1

    supervisor = Supervisor("audit", FAST, lambda _t: None)
    supervisor.spawn("sweep", ends)
    await asyncio.sleep(0.3)
    await supervisor.stop()
    assert calls >= 3
    assert "must not end" in (supervisor.health["audit:sweep"].last_error or "")


async def test_a_task_that_cannot_run_gives_up_and_says_so_once() -> None:
    gave_up: list[str] = []

    async def never() -> None:
        raise RuntimeError("the schema is gone")

    rule = Supervision(initial_s=0.01, cap_s=0.02, give_up_after_s=0.15)
    supervisor = Supervisor("intake", rule, gave_up.append)
    supervisor.spawn("deliver_webhooks", never)
    await asyncio.sleep(0.4)
    assert gave_up == ["intake:deliver_webhooks"]
    assert supervisor.given_up() == ["intake:deliver_webhooks"]
    assert supervisor.problems() == [
        "task gave-up: intake:deliver_webhooks "
        f"({supervisor.health['intake:deliver_webhooks'].restarts} restarts; "
        "RuntimeError('the schema is gone'))"
    ]
    await supervisor.stop()


async def test_stop_ends_a_task_that_swallowed_its_cancellation() -> None:
    """The relay's old idle wait (asyncio.wait_for on an event, Python 3.11) returned instead
    of raising when cancelled as the event was set; such a loop is cancelled again."""
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 1:
                    raise
                current = asyncio.current_task()
                assert current is not None
                current.uncancel()  # what the swallowing wait_for left behind

    supervisor = Supervisor("keymgmt", Supervision(stop_grace_s=0.05), lambda _t: None)
    supervisor.spawn("outbox-relay", stubborn)
    await asyncio.sleep(0.01)
    async with asyncio.timeout(2):
        await supervisor.stop()
    assert swallowed == 2


async def test_cancelling_the_supervisor_cancels_the_task() -> None:
    cancelled = asyncio.Event()

    async def waits() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    supervisor = Supervisor("fulfillment", FAST, lambda _t: None)
    supervisor.spawn("event-consumer", waits)
    await asyncio.sleep(0.01)
    with contextlib.suppress(asyncio.CancelledError):
        await supervisor.stop()
    assert cancelled.is_set()


async def test_liveness_fails_once_a_task_of_the_service_gave_up(tmp_path: Path) -> None:
    """/health is liveness: 200 while every task can run, 503 naming the task once one gave
    up, and the runtime's on_give_up (serve() ends the process with it) is called."""
    rule = Supervision(initial_s=0.01, cap_s=0.02, give_up_after_s=0.1)
    runtime = ServiceRuntime(
        name="qa",
        settings=BureauSettings(environment="test"),
        migrations=tmp_path,
        supervision=rule,
    )
    ended: list[str] = []
    runtime.on_give_up = ended.append
    transport = httpx.ASGITransport(app=create_app(runtime, title="qa"))
    async with httpx.AsyncClient(transport=transport, base_url="http://qa") as http:
        assert (await http.get("/health")).json()["alive"] is True

        async def run() -> None:
            raise RuntimeError("the reader's driver is missing")

        runtime.supervisor.spawn("run", run)
        await asyncio.sleep(0.4)
        answer = await http.get("/health")
    await runtime.supervisor.stop()
    await runtime.engine.dispose()
    assert answer.status_code == 503
    assert answer.json() == {
        "status": "failed",
        "service": "qa",
        "alive": False,
        "gave_up": ["qa:run"],
    }
    assert ended == ["qa:run"]
