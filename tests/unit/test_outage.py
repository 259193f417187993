"""Outages answer as outages (shared/outage.py, shared/errors.py): the database or Kafka away is
503 with Retry-After, logged once when it goes down and once when it is back; a record with any
bytes is turned into an event or UndecodableEvent, never another exception
(shared/bus.py decode_record), and the dead-letter path reads its key and headers as bytes."""

from __future__ import annotations

import logging
import uuid
from typing import Any, NamedTuple

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from aiokafka.errors import KafkaConnectionError
from fastapi import FastAPI
from sqlalchemy import exc as sa_exc

from shared import events, outage
from shared.bus import decode_record
from shared.dead_letter import record_bytes
from shared.errors import install_error_handlers
from shared.events import UndecodableEvent, encode_event


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: Any
    value: Any
    headers: Any


def app_raising(exc: Exception) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/orders")
    async def orders() -> None:
        raise exc

    return app


def db_down() -> Exception:
    return sa_exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connect refused"))


@pytest.mark.parametrize(
    ("raised", "dependency"),
    [
        (db_down(), "database"),
        (ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 55432)"), "network"),
        (KafkaConnectionError("no broker"), "kafka"),
    ],
)
async def test_a_dependency_away_answers_503_with_retry_after(
    raised: Exception, dependency: str
) -> None:
    transport = httpx.ASGITransport(app=app_raising(raised))
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as http:
        answer = await http.get("/orders")
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert answer.json() == {
        "detail": f"{dependency} unavailable; retry later",
        "refusal": "unavailable",
    }


def starting_up() -> Exception:
    """What SQLAlchemy's asyncpg dialect raises while PostgreSQL recovers from a crash: a
    plain DBAPIError whose DBAPI error carries SQLSTATE 57P03, caused by asyncpg's error."""

    class AdaptedError(Exception):
        sqlstate = "57P03"

    orig = AdaptedError("the database system is starting up")
    orig.__cause__ = asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
    return sa_exc.DBAPIError("SELECT 1", {}, orig)


def test_a_database_starting_up_is_an_outage_not_a_handler_failure() -> None:
    """Seen in the Postgres hard-stop e2e: classified as a handler failure, it dead-lettered
    good events after five attempts."""
    assert outage.dependency_of(starting_up()) == "database"
    plain = sa_exc.DBAPIError("SELECT 1", {}, ValueError("invalid input syntax"))
    assert outage.dependency_of(plain) is None
    assert outage.dependency_of(sa_exc.IntegrityError("INSERT", {}, ValueError("dup"))) is None


async def test_a_database_error_that_is_no_outage_stays_a_500() -> None:
    refused = sa_exc.IntegrityError("INSERT", {}, ValueError("duplicate key"))
    transport = httpx.ASGITransport(app=app_raising(refused), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as http:
        assert (await http.get("/orders")).status_code == 500


def test_an_outage_is_logged_when_it_starts_and_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    database = outage.Dependency("database")
    with caplog.at_level(logging.INFO, logger="shared.outage"):
        for _retry in range(500):
            database.down(db_down())
        assert database.problem() is not None
        database.up()
        database.up()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0] == "database is down; retrying quietly until it is back"
    assert lines[1].startswith("database is back after ")
    assert lines[1].endswith(" and 499 retries")
    assert caplog.records[1].__dict__["retries"] == 499
    assert database.problem() is None


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"\xff\xfe\x00garbage",
        b'{"type": "card.encoded", "version": 1}\xff',
        b'{"type": "no.such.event"}',
        b"[" * 100_000,
        bytes(range(256)) * 4,
        "not bytes at all",
    ],
)
def test_any_value_decodes_to_an_event_or_undecodable(value: Any) -> None:
    with pytest.raises(UndecodableEvent):
        decode_record(Record("bureau.qa", 0, 7, b"\xff\xfe", value, [("x", b"\xff")]))


def test_a_good_value_decodes_whatever_its_key_and_headers() -> None:
    event = events.CardQaPassed(
        issuer_id="acme",
        actor="qa",
        card_id=uuid.uuid4(),
        batch_id=uuid.uuid4(),
        chip_serial="A1B2C3D4E5F6",
        checks=["arqc"],
    )
    record = Record("bureau.qa", 2, 9, b"\x80\x81\xff", encode_event(event), [("\udcff", b"\0")])
    assert decode_record(record) == event


def test_the_dead_letter_path_reads_key_and_headers_as_bytes_only() -> None:
    record = Record(
        "bureau.qa", 1, 3, b"\xff\x00key", b"\xc3\x28", [("h\udcff", b"\xfe"), ("k", None)]
    )
    key, value, headers = record_bytes(record)
    assert key == b"\xff\x00key"
    assert value == b"\xc3\x28"
    assert headers == [(b"h\xff", b"\xfe"), (b"k", b"")]
    assert record_bytes(Record("t", 0, 0, None, None, None)) == (b"", b"", [])
