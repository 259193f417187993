"""Outages of the infrastructure under a service (PostgreSQL, Kafka): what counts as one, and
one log line when a dependency goes down and one when it is back, never a line per retry
(docs/architecture.md, "Supervision").

`is_outage(exc)` is the one classification: the consumer retries such failures without limit
(they say nothing about the event), HTTP answers them 503 with Retry-After (shared/errors.py).
"""

from __future__ import annotations

import logging
import time

import asyncpg  # type: ignore[import-untyped]
from aiokafka import errors as kafka_errors
from sqlalchemy import exc as sa_exc

log = logging.getLogger(__name__)

DATABASE_DOWN: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, cannot connect now
    asyncpg.exceptions.InterfaceError,  # the connection was closed under a query
)
KAFKA_DOWN: tuple[type[BaseException], ...] = (
    kafka_errors.KafkaConnectionError,
    kafka_errors.KafkaTimeoutError,
    kafka_errors.NodeNotReadyError,
    kafka_errors.RequestTimedOutError,
    kafka_errors.NotEnoughReplicasError,
    kafka_errors.NotLeaderForPartitionError,
)


# SQLSTATE classes of a database that cannot serve: 08 connection exception, 57P operator
# intervention (shutting down, crash shutdown, "the database system is starting up").
_DOWN_SQLSTATES = ("08", "57P")


def _database_down(exc: sa_exc.DBAPIError) -> bool:
    """A DBAPIError whose cause says the server is away. asyncpg's "starting up" (57P03) and
    "shutting down" arrive as a plain DBAPIError, not an OperationalError."""
    if exc.connection_invalidated:
        return True
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc.orig, exc.__cause__]
    while todo:
        cause = todo.pop()
        if cause is None or id(cause) in seen:
            continue
        seen.add(id(cause))
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_DOWN_SQLSTATES):
            return True
        if isinstance(cause, (*DATABASE_DOWN, OSError)):
            return True
        todo += [cause.__cause__, cause.__context__]
    return False


def dependency_of(exc: BaseException) -> str | None:
    """'database' or 'kafka' when `exc` says that dependency cannot be reached, else None."""
    if isinstance(exc, sa_exc.DBAPIError) and _database_down(exc):
        return "database"
    if isinstance(exc, DATABASE_DOWN):
        return "database"
    if isinstance(exc, KAFKA_DOWN):
        return "kafka"
    if isinstance(exc, OSError | ConnectionError | TimeoutError):
        return "network"
    return None


def is_outage(exc: BaseException) -> bool:
    return dependency_of(exc) is not None


class Dependency:
    """A dependency's up/down state in this process, logged on change only."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.down_since: float | None = None
        self.retries = 0
        self.reason = ""

    @property
    def is_down(self) -> bool:
        return self.down_since is not None

    def down(self, reason: object) -> None:
        """A call to it failed; the first failure of an outage is logged, the rest counted."""
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.retries = 0
            self.reason = repr(reason)[:300]
            log.error(
                "%s is down; retrying quietly until it is back",
                self.name,
                extra={"dependency": self.name, "error": self.reason},
            )
        else:
            self.retries += 1

    def up(self) -> None:
        """A call to it succeeded; the end of an outage is logged once."""
        if self.down_since is None:
            return
        down_for = time.monotonic() - self.down_since
        log.warning(
            "%s is back after %.1f s and %d retries",
            self.name,
            down_for,
            self.retries,
            extra={"dependency": self.name, "down_s": round(down_for, 1), "retries": self.retries},
        )
        self.down_since = None
        self.retries = 0

    def problem(self) -> str | None:
        if self.down_since is None:
            return None
        return f"{self.name} down for {time.monotonic() - self.down_since:.0f} s: {self.reason}"


# One per process: every loop of the service reports to the same ones.
DATABASE = Dependency("database")
KAFKA = Dependency("kafka")
_OTHERS: dict[str, Dependency] = {}


def report_failure(exc: BaseException) -> bool:
    """Count `exc` against its dependency when it is an outage; True when it was one."""
    kind = dependency_of(exc)
    if kind is None:
        return False
    if kind == "database":
        DATABASE.down(exc)
    elif kind == "kafka":
        KAFKA.down(exc)
    else:  # another service, the HSM, a socket: named by what was raised
        name = type(exc).__name__
        _OTHERS.setdefault(name, Dependency(name)).down(exc)
    return True


def report_recovery() -> None:
    """A pass of a loop succeeded end to end: whatever else it found down is back."""
    for dependency in _OTHERS.values():
        dependency.up()
