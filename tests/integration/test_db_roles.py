"""Least-privilege Postgres on the real database of the local stack (issue 15): a runtime role,
granted by `shared.migrate` after the owner migrated its schema, cannot alter or disable the
audit log's trigger, cannot rewrite the log, cannot read another service's schema nor create
anything in its own; a service started with its runtime role runs and handles events.

Each test makes its own schemas and LOGIN roles (random passwords) and drops them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.audit.app import MIGRATIONS as AUDIT_MIGRATIONS
from services.audit.app import bootstrap as audit_bootstrap
from services.audit.settings import AuditSettings
from shared import events
from shared.db import SchemaNotMigrated, make_engine, migrate, require_migrated
from shared.dbroles import RuntimeRoleRefused
from shared.migrate import main as migrate_main
from shared.migrate import migrate_and_grant
from shared.settings import BureauSettings
from tests.support.audit import stream_of
from tests.support.audit_story import BatchStory
from tests.support.db_roles import drop_schemas, login_role, runtime_url
from tests.support.delivery import delivering

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Granted:
    audit: str  # schemas
    keymgmt: str
    audit_role: str
    audit_url: str
    audit_engine: AsyncEngine


@pytest.fixture
async def owner(stack_env: dict[str, str]) -> AsyncIterator[AsyncEngine]:
    """The schema owner's engine: the stack's BUREAU_DATABASE_URL, as migrations use."""
    engine = make_engine(BureauSettings().database_url, "public", pool_size=1)
    yield engine
    await engine.dispose()


@pytest.fixture
async def granted(owner: AsyncEngine, unique: str) -> AsyncIterator[Granted]:
    """audit and keymgmt schemas migrated by the owner; audit's runtime role granted."""
    audit, keymgmt, role = f"rolesaudit_{unique}", f"roleskm_{unique}", f"rt_audit_{unique}"
    async with login_role(owner, role, audit, keymgmt) as password:
        await migrate_and_grant(owner, "keymgmt", keymgmt, None)
        report = await migrate_and_grant(owner, "audit", audit, role)
        assert set(report["append_only"]) == {"checkpoints", "events", "tree_nodes"}
        url = runtime_url(BureauSettings().database_url, role, password)
        engine = make_engine(url, audit, pool_size=1)
        try:
            yield Granted(audit, keymgmt, role, url, engine)
        finally:
            await engine.dispose()


async def refused(engine: AsyncEngine, sql: str) -> str:
    """Run `sql` as the engine's role; it must fail for want of privilege. Returns the error."""
    with pytest.raises(DBAPIError) as failure:
        async with engine.begin() as conn:
            await conn.execute(text(sql))
    message = str(failure.value.orig)
    assert "permission denied" in message or "must be owner" in message, message
    return message


async def append_one(engine: AsyncEngine, schema: str) -> None:
    """One log entry through audit's own append function, as the runtime role."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                f"SELECT {schema}.append_entry(1, :e, 'test.entry', 1, 'bank-a', 'test', :t,"
                " NULL, NULL, NULL, '{}'::jsonb, repeat('a', 64))"
            ),
            {"e": uuid.uuid4(), "t": datetime.now(UTC)},
        )


async def test_the_audit_runtime_role_cannot_alter_or_disable_the_log_trigger(
    granted: Granted,
) -> None:
    s, rt = granted.audit, granted.audit_engine
    await append_one(rt, s)
    for attack in (
        f"ALTER TABLE {s}.events DISABLE TRIGGER events_append_only",
        f"ALTER TABLE {s}.events DISABLE TRIGGER ALL",
        f"DROP TRIGGER events_append_only ON {s}.events",
        f"ALTER TABLE {s}.checkpoints DISABLE TRIGGER checkpoints_append_only",
        # Replacing the trigger's function with one that lets changes through.
        f"CREATE OR REPLACE FUNCTION {s}.refuse_event_change() RETURNS trigger"
        " LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END; $$",
        # Triggers do not fire for a replica session: only a superuser may be one.
        "SET session_replication_role = replica",
    ):
        await refused(rt, attack)
    async with rt.connect() as conn:
        enabled = await conn.execute(
            text(
                "SELECT t.tgenabled::text FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = :s AND t.tgname = 'events_append_only'"
            ),
            {"s": s},
        )
        assert enabled.scalar_one() == "O"  # still fires


async def test_the_audit_runtime_role_reads_and_appends_but_cannot_rewrite_the_log(
    granted: Granted,
) -> None:
    s, rt = granted.audit, granted.audit_engine
    await append_one(rt, s)
    async with rt.connect() as conn:
        assert (await conn.execute(text(f"SELECT count(*) FROM {s}.events"))).scalar_one() == 1
    # Refused by privilege, before the append-only trigger would even run.
    for table in ("events", "tree_nodes", "checkpoints"):
        message = await refused(rt, f"DELETE FROM {s}.{table}")
        assert f"permission denied for table {table}" in message
        await refused(rt, f"TRUNCATE {s}.{table}")
    await refused(rt, f"UPDATE {s}.events SET type = 'rewritten'")
    await refused(rt, f"UPDATE {s}.checkpoints SET root_hash = repeat('0', 64)")
    await refused(rt, f"INSERT INTO {s}.schema_migrations (name, checksum) VALUES ('x', 'y')")
    # The projections are the service's working state: it may change them.
    async with rt.begin() as conn:
        await conn.execute(text(f"UPDATE {s}.tree_head SET size = size"))


async def test_a_runtime_role_reaches_no_other_schema_and_creates_nothing(
    granted: Granted,
) -> None:
    s, rt = granted.audit, granted.audit_engine
    message = await refused(rt, f"SELECT iso4_block FROM {granted.keymgmt}.card_pins")
    assert f"permission denied for schema {granted.keymgmt}" in message
    await refused(rt, f"SELECT * FROM {granted.keymgmt}.keys")
    await refused(rt, f"CREATE TABLE {s}.shadow (x int)")
    await refused(rt, f"CREATE FUNCTION {s}.f() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    await refused(rt, f"CREATE SCHEMA shadow_{granted.audit_role}")
    await refused(rt, f"DROP TABLE {s}.events")
    await refused(rt, f"DROP SCHEMA {s} CASCADE")


async def test_tables_of_later_migrations_follow_and_append_only_ones_stay_so(
    granted: Granted, owner: AsyncEngine
) -> None:
    s, rt = granted.audit, granted.audit_engine
    async with owner.begin() as conn:  # what a later migration would do, as the owner
        await conn.execute(text(f"CREATE TABLE {s}.later (id bigserial PRIMARY KEY, v int)"))
        await conn.execute(text(f"CREATE TABLE {s}.later_log (id bigserial PRIMARY KEY)"))
        await conn.execute(
            text(
                f"CREATE TRIGGER later_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE"
                f" ON {s}.later_log FOR EACH STATEMENT EXECUTE FUNCTION {s}.refuse_event_change()"
            )
        )
    async with rt.begin() as conn:  # default privileges: reachable before any new grant
        await conn.execute(text(f"INSERT INTO {s}.later (v) VALUES (1)"))
        await conn.execute(text(f"UPDATE {s}.later SET v = 2"))
    report = await migrate_and_grant(owner, "audit", s, granted.audit_role)
    assert "later_log" in report["append_only"]
    async with rt.begin() as conn:
        await conn.execute(text(f"INSERT INTO {s}.later_log DEFAULT VALUES"))
    assert "permission denied" in await refused(rt, f"DELETE FROM {s}.later_log")


async def test_the_grant_refuses_a_role_that_is_not_least_privilege(
    granted: Granted, owner: AsyncEngine, unique: str
) -> None:
    owner_role = BureauSettings().database_url.split("//", 1)[1].split(":", 1)[0]
    with pytest.raises(RuntimeRoleRefused, match="owner"):
        await migrate_and_grant(owner, "audit", granted.audit, owner_role)
    # One role for two services would read both: the second grant is refused.
    other = f"rolesother_{unique}"
    try:
        with pytest.raises(RuntimeRoleRefused, match=f"already reaches schema.*{granted.audit}"):
            await migrate_and_grant(owner, "fulfillment", other, granted.audit_role)
    finally:
        await drop_schemas(owner, other)
    with pytest.raises(RuntimeRoleRefused, match="does not exist"):
        await migrate_and_grant(owner, "audit", granted.audit, f"nobody_{unique}")


async def test_a_runtime_role_does_not_migrate_and_says_what_to_run(
    owner: AsyncEngine, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    schema, role = f"rolesnew_{unique}", f"rt_new_{unique}"
    async with login_role(owner, role, schema) as password:
        url = runtime_url(BureauSettings().database_url, role, password)
        settings = AuditSettings(environment="test", database_url=url, migrate_on_start=False)
        runtime = audit_bootstrap(settings, schema=schema)
        # It stops before anything else (Kafka, workers), saying what to run.
        with pytest.raises(
            SchemaNotMigrated, match=f"python -m shared.migrate audit --schema {schema}"
        ):
            await runtime.start()
        await runtime.stop()
        # The owner migrates (the CLI), then the runtime role's check passes.
        assert await migrate_main(["audit", "--schema", schema, "--runtime-role", role]) == 0
        assert f'"runtime_role": "{role}"' in capsys.readouterr().out
        engine = make_engine(url, schema, pool_size=1)
        try:
            await require_migrated(engine, schema, AUDIT_MIGRATIONS, "audit")
            # A tool that calls migrate() as the runtime role (keymgmt's ceremony CLI in its
            # pod) checks instead of trying: nothing to apply, no permission error.
            assert await migrate(engine, schema, AUDIT_MIGRATIONS) == []
            # A migration the schema lacks (as after deploying newer code) is named.
            async with owner.begin() as conn:
                await conn.execute(
                    text(f"DELETE FROM {schema}.schema_migrations WHERE name LIKE '%0007%'")
                )
            with pytest.raises(SchemaNotMigrated, match="lacks 1 migration.*0007"):
                await migrate(engine, schema, AUDIT_MIGRATIONS)
        finally:
            await engine.dispose()
        runtime = audit_bootstrap(settings, schema=schema)
        with pytest.raises(SchemaNotMigrated, match="lacks 1 migration.*0007"):
            await runtime.start()
        await runtime.stop()
        # The CLI's check says the same, and exits 1.
        assert await migrate_main(["audit", "--schema", schema, "--check"]) == 1
        assert "0007" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["in_process", "kafka"])
async def test_audit_started_with_its_runtime_role_reconciles_a_batch(
    granted: Granted, unique: str, how: str
) -> None:
    """Its handlers, inbox, outbox and log appends as the runtime role: records fed to its
    consumer in process, and the service started for real on the stack's Kafka."""
    settings = AuditSettings(
        environment="test",
        topic_prefix=f"t{unique}",
        database_url=granted.audit_url,
        migrate_on_start=False,
    )
    runtime = audit_bootstrap(settings, schema=granted.audit)
    story = BatchStory(2)
    batch = story.good_batch()
    async with delivering(runtime, how) as delivery:
        for stream in ("intake", "keymgmt", "electrical", "graphical", "qa", "fulfillment"):
            told = [e for e in batch if stream_of(e) == stream]
            if told:
                await delivery.deliver(*told, stream=stream)
        out = await delivery.emitted()
    assert [e.batch_id for e in out.events if isinstance(e, events.BatchReconciled)] == [
        story.batch_id
    ]
    async with granted.audit_engine.connect() as conn:
        logged = await conn.execute(text(f"SELECT count(*) FROM {granted.audit}.events"))
        assert logged.scalar_one() >= len(batch)
