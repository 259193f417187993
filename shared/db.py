"""Database access: one async engine per service, its own schema, ordered SQL migrations.

Each service owns one Postgres schema (ARCHITECTURE.md) and keeps its migrations as numbered
`.sql` files in `services/<name>/migrations/`. The runner applies the missing ones in order,
each in its own transaction, under an advisory lock so replicas starting together do not race.
The outbox and inbox tables every service needs come first, from shared/migrations.

Least privilege (docs/deploy.md, "Database roles"): migrations run as the schema owner, then
grant the service's runtime role only what it needs (shared/dbroles.py). A process that runs as
the runtime role does not migrate: it checks that its schema is at the latest migration
(require_migrated) and says what to run if it is not.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from shared.outage import is_outage

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
SHARED_MIGRATIONS = Path(__file__).parent / "migrations"


def checked_identifier(name: str) -> str:
    """Schema names are interpolated into SQL, so only plain identifiers pass."""
    if not _IDENT.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


def make_engine(url: str, schema: str, pool_size: int = 5) -> AsyncEngine:
    """The service's engine. A pooled connection is checked without a round trip when it is
    taken (`_closed_on_checkout`), not pinged: SQLAlchemy's pre-ping costs three (BEGIN, an
    empty query, ROLLBACK) on every checkout, more than half of a typical unit of work's five
    (bench/db_uow.py, docs/architecture.md "Round trips per unit of work")."""
    checked_identifier(schema)
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={"server_settings": {"search_path": f"{schema},public"}},
    )
    event.listen(engine.sync_engine.pool, "checkout", _closed_on_checkout)
    return engine


def _closed_on_checkout(
    _dbapi_connection: object, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    """A pooled connection whose server went away (PostgreSQL stopped or restarted, its backend
    terminated) is closed on our side as soon as the event loop reads the server's goodbye; such
    a one is replaced here, before the unit of work that takes it sends anything, with no round
    trip. The pool discards it and connects afresh (DisconnectionError)."""
    driver = record.driver_connection
    if driver is not None and driver.is_closed():
        raise DisconnectionError("the pooled connection was closed by the server")


def _migration_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix == ".sql")


def _statements(sql: str) -> list[str]:
    """Split on semicolons at line ends, keeping $$-quoted function bodies whole."""
    statements: list[str] = []
    current: list[str] = []
    in_dollar = False
    for line in sql.splitlines():
        if line.count("$$") % 2 == 1:
            in_dollar = not in_dollar
        current.append(line)
        if not in_dollar and line.rstrip().endswith(";"):
            statement = "\n".join(current).strip()
            if statement.strip(";").strip():
                statements.append(statement)
            current = []
    rest = "\n".join(current).strip()
    if rest:
        statements.append(rest)
    return statements


def _all_migrations(service_migrations: Path) -> list[tuple[str, Path]]:
    files = [("shared", p) for p in _migration_files(SHARED_MIGRATIONS)]
    files += [("service", p) for p in _migration_files(service_migrations)]
    return [(f"{origin}/{path.name}", path) for origin, path in files]


def _rendered(path: Path, schema: str) -> tuple[str, str]:
    """A migration's SQL for this schema, and the checksum recorded when it is applied."""
    sql = path.read_text(encoding="utf-8").replace("{schema}", schema)
    return sql, hashlib.sha256(sql.encode()).hexdigest()


def migration_lock_key(schema: str) -> int:
    """The advisory lock under which a schema is migrated (and its runtime role granted)."""
    return int.from_bytes(hashlib.sha256(schema.encode()).digest()[:7], "big")


class SchemaNotMigrated(RuntimeError):
    """The schema lacks migrations this code needs, and this process must not apply them."""


async def require_migrated(
    engine: AsyncEngine, schema: str, service_migrations: Path, service: str
) -> None:
    """What a runtime role does instead of migrating: check the schema has every migration of
    this code, unchanged, and otherwise say which are missing and what to run."""
    checked_identifier(schema)
    run = (
        f"run `python -m shared.migrate {service} --schema {schema}` first, with the schema "
        "owner's credential as its BUREAU_DATABASE_URL"
    )
    async with engine.connect() as conn:
        user = (await conn.execute(text("SELECT current_user"))).scalar_one()
        # By oid from the catalog (readable by every role): naming a schema the role may not
        # use would fail with "permission denied" instead of answering.
        readable = (
            await conn.execute(
                text(
                    "SELECT has_schema_privilege(n.oid, 'USAGE')"
                    " AND has_table_privilege(c.oid, 'SELECT')"
                    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = :s AND c.relname = 'schema_migrations'"
                ),
                {"s": schema},
            )
        ).scalar()
        if not readable:
            raise SchemaNotMigrated(
                f"role {user} cannot read {schema}.schema_migrations (the schema is not migrated "
                f"or {user} was not granted it): {run}"
            )
        rows = await conn.execute(text(f"SELECT name, checksum FROM {schema}.schema_migrations"))
        recorded: dict[str, str] = {str(row[0]): str(row[1]) for row in rows}
    missing: list[str] = []
    for name, path in _all_migrations(service_migrations):
        _sql, checksum = _rendered(path, schema)
        if name not in recorded:
            missing.append(name)
        elif recorded[name] != checksum:
            raise SchemaNotMigrated(f"migration {name} changed after it was applied to {schema}")
    if missing:
        raise SchemaNotMigrated(
            f"schema {schema} lacks {len(missing)} migration(s) ({', '.join(missing)}); role "
            f"{user} does not migrate: {run}"
        )


async def _may_migrate(engine: AsyncEngine, schema: str) -> bool:
    """The schema's owner (or a member of it) may migrate it; a schema not made yet, whoever may
    create schemas in the database."""
    async with engine.connect() as conn:
        row = await conn.execute(
            text(
                "SELECT CASE WHEN n.oid IS NULL"
                " THEN has_database_privilege(current_database(), 'CREATE')"
                " ELSE pg_has_role(n.nspowner, 'USAGE') END"
                " FROM (SELECT 1) AS one LEFT JOIN pg_namespace n ON n.nspname = :s"
            ),
            {"s": schema},
        )
        return bool(row.scalar_one())


async def migrate(engine: AsyncEngine, schema: str, service_migrations: Path) -> list[str]:
    """Create the schema and apply missing migrations. Returns the names applied now.

    Run as a role that may not migrate the schema (a runtime role: a tool such as keymgmt's
    ceremony CLI inside a service's pod), it checks the schema instead (require_migrated)."""
    checked_identifier(schema)
    if not await _may_migrate(engine, schema):
        await require_migrated(engine, schema, service_migrations, service_migrations.parent.name)
        return []
    lock_key = migration_lock_key(schema)
    applied_now: list[str] = []
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key})
        try:
            await conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
            await conn.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("
                    " name text PRIMARY KEY, checksum text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
            )
            await conn.commit()
            for name, path in _all_migrations(service_migrations):
                sql, checksum = _rendered(path, schema)
                row = (
                    await conn.execute(
                        text(f"SELECT checksum FROM {schema}.schema_migrations WHERE name = :n"),
                        {"n": name},
                    )
                ).first()
                if row is not None:
                    if row[0] != checksum:
                        raise RuntimeError(f"migration {name} changed after it was applied")
                    continue
                await _apply(conn, schema, name, sql, checksum)
                applied_now.append(name)
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key})
            await conn.commit()
    return applied_now


async def _apply(conn: AsyncConnection, schema: str, name: str, sql: str, checksum: str) -> None:
    for statement in _statements(sql):
        await conn.execute(text(statement))
    await conn.execute(
        text(f"INSERT INTO {schema}.schema_migrations (name, checksum) VALUES (:n, :c)"),
        {"n": name, "c": checksum},
    )
    await conn.commit()


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """The unit of work: one connection, one transaction, committed when the block ends (rolled
    back when it raises).

    Its BEGIN goes out at once, not with the first statement (the same round trip, earlier): a
    pooled connection found dead by it (the server restarted while nobody used the connection,
    and the event loop had not read its goodbye yet) is discarded and the unit starts once more
    on a fresh one, before any of the block ran. A failure after that is the block's (its
    statements may have reached the server, its commit may have): never retried here."""
    for attempt in (1, 2):
        stack = AsyncExitStack()
        conn = await stack.enter_async_context(engine.begin())
        try:
            await _begin_now(conn)
        except BaseException as exc:
            await stack.__aexit__(type(exc), exc, exc.__traceback__)  # rolled back, returned
            if not isinstance(exc, _DeadConnection):
                raise
            if attempt == 2:
                raise exc.error from exc.error.orig
            continue
        async with stack:
            yield conn
        return


class _DeadConnection(Exception):
    def __init__(self, error: OperationalError) -> None:
        super().__init__(str(error))
        self.error = error


async def _begin_now(conn: AsyncConnection) -> None:
    """Send the transaction's BEGIN now. SQLAlchemy's asyncpg adapter starts it lazily with the
    first statement (AsyncAdapt_asyncpg_connection._start_transaction, which that statement
    then finds done); a disconnect here means nothing of the unit reached the server."""
    raw = await conn.get_raw_connection()
    adapted: Any = raw.dbapi_connection
    try:
        await adapted._start_transaction()
    except Exception as exc:
        # Dead: closed under the BEGIN, or the server's own answer says it is going away (its
        # "terminating connection" can arrive before the close is read).
        driver = raw.driver_connection
        closed = driver is not None and driver.is_closed()
        if not closed and not is_outage(exc.__cause__ or exc):
            raise
        await conn.invalidate(exc)
        raise _DeadConnection(
            OperationalError("BEGIN", None, exc, connection_invalidated=True)
        ) from exc
