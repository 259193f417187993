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
    # Every topic is made before a service subscribes or produces (shared/bus.ensure_topics):
    # one the broker does not know is one it has not loaded yet, after a restart (the fault
    # suite's Kafka kill: rows refused with it and counted towards parking while it recovered).
    kafka_errors.UnknownTopicOrPartitionError,
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


# The client library a raw socket error came through names the dependency it was talking to:
# asyncpg lets ConnectionRefusedError and other OSErrors of its connect out as they are, and
# SQLAlchemy's pool passes them on unwrapped.
_CLIENT_MODULES = (("asyncpg", "database"), ("sqlalchemy", "database"), ("aiokafka", "kafka"))


def _raised_through(exc: BaseException) -> str | None:
    """The dependency whose client library the traceback of `exc` passes through, innermost
    frame first (the library nearest the socket names it)."""
    modules: list[str] = []
    tb = exc.__traceback__
    while tb is not None:
        modules.append(str(tb.tb_frame.f_globals.get("__name__", "")))
        tb = tb.tb_next
    for module in reversed(modules):
        for prefix, dependency in _CLIENT_MODULES:
            if module == prefix or module.startswith(prefix + "."):
                return dependency
    return None


def dependency_of(exc: BaseException) -> str | None:
    """'database' or 'kafka' when `exc` says that dependency cannot be reached, 'network' for
    another socket error, else None. A raw OSError raised inside the database's or Kafka's
    client library is that dependency's."""
    if isinstance(exc, sa_exc.DBAPIError) and _database_down(exc):
        return "database"
    if isinstance(exc, DATABASE_DOWN):
        return "database"
    if isinstance(exc, KAFKA_DOWN):
        return "kafka"
    if isinstance(exc, OSError | ConnectionError | TimeoutError):
        return _raised_through(exc) or "network"
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
_NAMED: dict[str, Dependency] = {}


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


def named(name: str) -> Dependency:
    """The process's one Dependency called `name` (pcscd, the checkpoint signer...), for a loop
    whose failures say which dependency is away by their type rather than by an exception
    report_failure classifies."""
    return _NAMED.setdefault(name, Dependency(name))


def report_recovery(*back: Dependency) -> None:
    """A pass of a loop succeeded end to end: the dependencies it used (`back`; the database when
    none is named) are up again, and so is any socket it found down. Each end of an outage is
    logged once (Dependency.up)."""
    for dependency in back or (DATABASE,):
        dependency.up()
    for dependency in _OTHERS.values():
        dependency.up()
