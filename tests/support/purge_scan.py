"""Searching everything a test's services left behind for a card's sensitive data: every row of
every table of the given schemas (whatever their columns), every file under the given folders,
every record of every Kafka topic under the test's prefix, every log record of the services,
and the card printers' spools (a printed face is pixels: its name and CVV2 are in no byte string,
so a file there that names the card is a hit).

A secret is looked for in each form it can take: a PAN as ASCII digits (also grouped by spaces,
dashes or dots, as printed), as the chip's BCD bytes (tag 5A, track 2 equivalent data) and as
that BCD in hex, upper or lower case; a name in UTF-8, UTF-16 and JSON-escaped, upper case too;
bytes (a PIN block, a sealed value) as raw bytes, hex and base64. Short values (a CVV) would
match any timestamp by chance, so they count only where they stand alone: a whole column value,
a JSON string value, or a JSON field named after the secret; a PIN only under a field named for
it (its clear and encrypted blocks are looked for everywhere).

A table's columns are read by their type: text, jsonb/json and arrays as PostgreSQL renders them
as text (a JSON number, or a non-ASCII name unescaped, where Python would re-encode them); bytea
raw and decoded as Latin-1 (a name kept in Latin-1 bytes); numbers for a PAN only (a count of
123 is no CVV); ids, times and flags cannot hold cardholder data and are skipped.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db import checked_identifier
from tests.support.stack_dump import TEST_SCHEMA, kafka_records


@dataclass(frozen=True)
class Secret:
    """One sensitive value and the byte strings that give it away."""

    name: str
    forms: tuple[bytes, ...] = ()
    short: str | None = None  # a few digits: matched only standing alone
    fields: tuple[str, ...] = field(default=())  # JSON keys whose value would be it
    pattern: bytes | None = None  # a regular expression of its forms a byte string can't list

    def found_in(self, blob: bytes, *, alone: bool = True) -> bool:
        """Whether the blob gives the secret away; `alone` False: only its long forms (a number
        column's value of a few digits is the table's own, not a CVV)."""
        if any(form in blob for form in self.forms):
            return True
        if self.pattern is not None and re.search(self.pattern, blob):
            return True
        if not alone:
            return False
        if self.short is not None:
            quoted = re.escape(json.dumps(self.short).encode())
            if blob.strip() == self.short.encode() or re.search(rb":\s*" + quoted, blob):
                return True
        return any(
            re.search(re.escape(json.dumps(key).encode()) + rb"\s*:\s*\"?" + b"\\d", blob)
            for key in self.fields
        )


def pan_secret(name: str, pan: str) -> Secret:
    bcd = bytes.fromhex(pan + "F" * (len(pan) % 2))
    hexed = bcd.hex()
    grouped = rb"[ .-]?".join(re.escape(digit.encode()) for digit in pan)  # "4111 1111 ..."
    return Secret(
        name, (pan.encode(), bcd, hexed.encode(), hexed.upper().encode()), None, (), grouped
    )


def text_secret(name: str, value: str) -> Secret:
    """A name as UTF-8 and UTF-16, upper case too, and JSON-escaped (`\\u00e9`: a json column,
    unlike jsonb, keeps the escapes it was given, and so do other JSON writers' bytes)."""
    spelled = {value, value.upper()}
    escaped = {json.dumps(v)[1:-1] for v in spelled}
    forms = {v.encode() for v in spelled | escaped} | {value.encode("utf-16-le")}
    return Secret(name, tuple(sorted(forms)))


def bytes_secret(name: str, value: bytes) -> Secret:
    forms = (value, value.hex().encode(), value.hex().upper().encode(), base64.b64encode(value))
    return Secret(name, forms)


def short_secret(name: str, digits: str, *fields: str) -> Secret:
    return Secret(name, (), digits, fields)


def field_secret(name: str, *fields: str) -> Secret:
    """A value too short or too random to look for alone (a generated PIN would meet an expiry
    date by chance now and then): any digits under one of these JSON keys."""
    return Secret(name, (), None, fields)


def _hits(where: str, blob: bytes, secrets: Iterable[Secret], *, alone: bool = True) -> list[str]:
    return [f"{s.name} in {where}" for s in secrets if s.found_in(blob, alone=alone)]


# Column types that hold no cardholder data (ids, times, flags), and those read as numbers.
_NOT_SCANNED = re.compile(r"uuid|boolean|date|time.*|interval|inet|cidr|macaddr|oid")
_NUMBERS = re.compile(r"smallint|integer|bigint|numeric|real|double precision|money")


def _selected(column: str, data_type: str) -> str:
    """The SELECT item of a column: bytea raw, everything else as PostgreSQL renders it."""
    quoted = f'"{checked_identifier(column)}"'
    return quoted if data_type == "bytea" else f"{quoted}::text AS {quoted}"


def column_hits(
    where: str, data_type: str, value: str | bytes | None, secrets: Iterable[Secret]
) -> list[str]:
    """The secrets one column value gives away, read by its PostgreSQL type (the module's doc)."""
    if value is None or _NOT_SCANNED.fullmatch(data_type):
        return []
    if isinstance(value, bytes):  # bytea: as stored, and a Latin-1 text re-read as UTF-8
        blobs = [value, value.decode("latin-1").encode()]
        return sorted({hit for blob in blobs for hit in _hits(where, blob, secrets)})
    return _hits(where, value.encode(), secrets, alone=not _NUMBERS.fullmatch(data_type))


async def bureau_schemas(engine: AsyncEngine) -> list[str]:
    """Every schema of the database holding a table, but PostgreSQL's own and the integration
    tier's (`<service>_<10 hex>`, by the thousand on a long-lived dev stack)."""
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT DISTINCT table_schema FROM information_schema.tables"
                " WHERE table_type = 'BASE TABLE' AND table_schema !~ '^pg_'"
                " AND table_schema <> 'information_schema' AND table_schema !~ :test"
                " ORDER BY table_schema"
            ),
            {"test": TEST_SCHEMA},
        )
        return [str(name) for (name,) in found.all()]


async def table_hits(
    engine: AsyncEngine, schemas: Iterable[str], secrets: list[Secret]
) -> list[str]:
    """Every row of every table of the schemas (information_schema names them), every column."""
    hits: list[str] = []
    async with engine.connect() as conn:
        for schema in schemas:
            tables = await conn.execute(
                text(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = :s AND table_type = 'BASE TABLE'"
                ),
                {"s": schema},
            )
            names = [str(t) for (t,) in tables.all()]
            assert names, f"schema {schema} has no tables: the scan would prove nothing"
            for table in names:
                hits += await _table_hits(conn, schema, table, secrets)
    return sorted(set(hits))


async def _table_hits(
    conn: AsyncConnection, schema: str, table: str, secrets: list[Secret]
) -> list[str]:
    found = await conn.execute(
        text(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = :s AND table_name = :t ORDER BY ordinal_position"
        ),
        {"s": schema, "t": table},
    )
    types = {str(column): str(data_type) for column, data_type in found.all()}
    items = ", ".join(_selected(column, data_type) for column, data_type in types.items())
    ref = f'"{checked_identifier(schema)}"."{checked_identifier(table)}"'
    rows = await conn.execute(text(f"SELECT {items} FROM {ref}"))  # noqa: S608
    hits: list[str] = []
    for row in rows.mappings():
        for column, value in row.items():
            where = f"{schema}.{table}.{column}"
            hits += column_hits(where, types[str(column)], value, secrets)
    return hits


def file_hits(roots: Iterable[Path], secrets: list[Secret], skip: Iterable[Path] = ()) -> list[str]:
    """Every regular file under the roots, except the folders in `skip`."""
    skipped = [s.resolve() for s in skip]
    hits: list[str] = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or any(path.resolve().is_relative_to(s) for s in skipped):
                continue
            hits += _hits(str(path), path.read_bytes(), secrets)
    return sorted(set(hits))


def spool_hits(spools: Iterable[Path], card_ids: Iterable[object]) -> list[str]:
    """Every file a printer's spool still holds of the cards (job named `card-<id>`)."""
    names = [f"-card-{card_id}." for card_id in card_ids]
    hits: list[str] = []
    for spool in spools:
        if spool.is_dir():
            hits += [
                f"printed face in {path}"
                for path in sorted(spool.rglob("*"))
                if any(name in path.name for name in names)
            ]
    return hits


async def topic_hits(bootstrap: str, prefix: str, secrets: list[Secret]) -> tuple[int, list[str]]:
    """Every record (key, value, headers) of every topic `<prefix>.*`, read from the start."""
    records = await kafka_records(bootstrap, prefix)
    hits: list[str] = []
    for record in records:
        parts = [record.key or b"", record.value or b""]
        parts += [value or b"" for _, value in record.headers]
        where = f"{record.topic}@{record.offset}"
        for part in parts:
            hits += _hits(where, part, secrets)
    return len(records), sorted(set(hits))


def log_hits(records: Iterable[logging.LogRecord], secrets: list[Secret]) -> list[str]:
    """Every log record, its message and every attribute (the JSON log's extra fields)."""
    hits: list[str] = []
    for record in records:
        rendered = json.dumps({**record.__dict__, "message": record.getMessage()}, default=str)
        hits += _hits(f"log {record.name}:{record.lineno}", rendered.encode(), secrets)
    return sorted(set(hits))
