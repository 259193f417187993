"""One supervision rule for every long-running task of a service (docs/architecture.md,
"Supervision"): the outbox relay, the event consumer and every worker (the QA run loop, webhook
delivery, pollers, sweeps).

- A task that raises, or returns (a long-running task never ends by itself), is started again
  after a capped exponential backoff with jitter; when its dependency is back it runs again by
  itself.
- While it waits to be restarted, readiness names it; once it has run `healthy_after_s` without
  failing, its streak is over.
- One log line when a task's streak of failures starts, one when it runs again (with how long
  and how many restarts); never a line per retry.
- A task that has failed without one healthy run for `give_up_after_s` cannot run: it is marked
  given up, liveness fails, and the runtime's `on_give_up` ends the process so that the
  orchestrator (services.sh, Kubernetes) starts a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from shared import metrics

log = logging.getLogger(__name__)

TaskState = Literal["running", "restarting", "gave-up"]
TaskFactory = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Supervision:
    """The rule's numbers. The backoff doubles from `initial_s` up to `cap_s`; each wait is
    drawn between half and all of it (jitter), so replicas do not retry in step."""

    initial_s: float = 0.5
    cap_s: float = 10.0
    healthy_after_s: float = 30.0
    give_up_after_s: float = 600.0
    # Waiting for a cancelled task at stop(): a task that swallowed its cancellation (Python
    # 3.11's wait_for does when the awaited future completes at the same moment) is cancelled
    # again after this long, so stop() never hangs.
    stop_grace_s: float = 2.0

    def delay(self, failures: int, draw: Callable[[], float] = random.random) -> float:
        ceiling = min(self.cap_s, self.initial_s * 2.0 ** max(failures - 1, 0))
        return ceiling / 2 + draw() * ceiling / 2


@dataclass
class TaskHealth:
    """What readiness and liveness report of one supervised task."""

    name: str
    state: TaskState = "running"
    restarts: int = 0
    failures_in_row: int = 0
    failing_since: float | None = None
    last_error: str | None = None
    _recovery: asyncio.TimerHandle | None = field(default=None, repr=False)

    def problem(self) -> str | None:
        if self.state == "running":
            return None
        return f"task {self.state}: {self.name} ({self.restarts} restarts; {self.last_error})"


class Supervisor:
    """Runs a service's long-running tasks under the rule above."""

    def __init__(
        self,
        service: str,
        rule: Supervision,
        on_give_up: Callable[[str], None],
    ) -> None:
        self._service = service
        self.rule = rule
        self._on_give_up = on_give_up
        self.health: dict[str, TaskHealth] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def spawn(self, name: str, factory: TaskFactory) -> None:
        """Run `factory()` under supervision; it is called again for every restart."""
        health = TaskHealth(name=f"{self._service}:{name}")
        self.health[health.name] = health
        # The series starts at 0, so a healthy task charts "0 restarts" rather than no data.
        metrics.TASK_RESTARTS.labels(service=metrics.service_name(), task=health.name)
        self._tasks.append(asyncio.create_task(self._keep(health, factory), name=health.name))

    def problems(self) -> list[str]:
        return [p for h in self.health.values() if (p := h.problem()) is not None]

    def given_up(self) -> list[str]:
        return [h.name for h in self.health.values() if h.state == "gave-up"]

    async def _keep(self, health: TaskHealth, factory: TaskFactory) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            health.state = "running"
            if health.failures_in_row:
                health._recovery = loop.call_later(
                    self.rule.healthy_after_s, self._recovered, health, loop
                )
            try:
                await factory()
                error = "returned, and a long-running task must not end"
                exc_info: BaseException | None = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error, exc_info = repr(exc)[:300], exc
            finally:
                if health._recovery is not None:
                    health._recovery.cancel()
                    health._recovery = None
            now = loop.time()
            if health.failures_in_row == 0:
                health.failing_since = started
                log.error(
                    "task %s failed; restarting it with backoff until it runs again",
                    health.name,
                    exc_info=exc_info,
                    extra={"task": health.name, "error": error},
                )
            health.failures_in_row += 1
            health.last_error = error
            assert health.failing_since is not None
            if now - health.failing_since >= self.rule.give_up_after_s:
                health.state = "gave-up"
                log.critical(
                    "task %s cannot run: failing for %.0f s over %d restarts; the process "
                    "stops so that it is started afresh",
                    health.name,
                    now - health.failing_since,
                    health.restarts,
                    extra={"task": health.name, "error": error},
                )
                self._on_give_up(health.name)
                return
            health.state = "restarting"
            await asyncio.sleep(self.rule.delay(health.failures_in_row))
            health.restarts += 1
            metrics.TASK_RESTARTS.labels(service=metrics.service_name(), task=health.name).inc()

    def _recovered(self, health: TaskHealth, loop: asyncio.AbstractEventLoop) -> None:
        down_for = loop.time() - (health.failing_since or loop.time())
        retries = health.failures_in_row
        log.warning(
            "task %s running again after %.1f s and %d restarts",
            health.name,
            down_for,
            retries,
            extra={"task": health.name, "down_s": round(down_for, 1), "retries": retries},
        )
        health.failures_in_row = 0
        health.failing_since = None
        health._recovery = None

    async def stop(self) -> None:
        """Cancel every task and wait for it; a task that swallowed the cancellation is
        cancelled again (see Supervision.stop_grace_s) until it ends."""
        pending = {t for t in self._tasks if not t.done()}
        while pending:
            for task in pending:
                task.cancel()
            _done, pending = await asyncio.wait(pending, timeout=self.rule.stop_grace_s)
            for task in pending:
                log.warning("task %s ignored its cancellation; cancelling again", task.get_name())
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
