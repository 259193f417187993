"""A written chip's outcome waits for the database: the unit of work that records it is retried
through every failure shared.outage counts as an outage, including the plain DBAPIError a hard
Postgres stop raises ("the database system is starting up", 57P03), and nothing else."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc

from services.electrical.outcomes import in_transaction


class StartingUp(Exception):
    sqlstate = "57P03"  # asyncpg's CannotConnectNowError carries it so


class FlakyRuntime:
    """Its unit of work fails with the given errors first, then works."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.attempts = 0

    @contextlib.asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[Any]:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)

        class Uow:
            repo = object()

        yield Uow()


async def recorded(_uow: Any, _repo: Any) -> bool:
    return True


async def test_an_outcome_is_retried_through_a_database_starting_up() -> None:
    starting = sa_exc.DBAPIError("UPDATE station_cards", {}, StartingUp("starting up"))
    assert not isinstance(starting, sa_exc.OperationalError | sa_exc.InterfaceError)
    runtime = FlakyRuntime(starting, ConnectionRefusedError(111, "refused"))
    assert await in_transaction(runtime, recorded) is True  # type: ignore[arg-type]
    assert runtime.attempts == 3


async def test_a_failure_that_is_no_outage_is_raised_at_once() -> None:
    runtime = FlakyRuntime(ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        await in_transaction(runtime, recorded)  # type: ignore[arg-type]
    assert runtime.attempts == 1
