"""Migrate one service's schema as its owner, then grant the service's runtime role.

    python -m shared.migrate intake          # migrate, grant BUREAU_DATABASE_RUNTIME_ROLE
    python -m shared.migrate audit --runtime-role bureau_audit
    python -m shared.migrate audit --check   # only check, as the runtime role does

It connects with its own BUREAU_DATABASE_URL, which must be the schema owner's credential: the
local stack's services.sh runs it before each service, Kubernetes as one Job per service
(deploy/k8s/base/migrations). The service process then connects as its runtime role with
BUREAU_MIGRATE_ON_START=false and never holds the owner's credential (docs/deploy.md,
"Database roles"). Prints one JSON line: what was applied and what the role was granted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import (
    SchemaNotMigrated,
    checked_identifier,
    make_engine,
    migrate,
    migration_lock_key,
    require_migrated,
)
from shared.dbroles import RuntimeRoleRefused, grant_runtime_role
from shared.settings import BureauSettings

SERVICES_DIR = Path(__file__).resolve().parents[1] / "services"


class MigrationSettings(BaseSettings):
    """What the migrate step reads, and nothing of a service's: its process holds the owner's
    credential only (no token, no Kafka principal)."""

    model_config = SettingsConfigDict(env_prefix="BUREAU_", extra="ignore")

    database_url: str = BureauSettings.model_fields["database_url"].default
    # The role the service process connects as; granted what it needs after the migrations.
    database_runtime_role: str | None = None


def service_migrations(service: str) -> Path:
    """services/<service>/migrations, or a clear error naming the services that have one."""
    directory = SERVICES_DIR / checked_identifier(service) / "migrations"
    if not directory.is_dir():
        known = sorted(p.parent.name for p in SERVICES_DIR.glob("*/migrations") if p.is_dir())
        raise SystemExit(f"no service {service!r} with migrations (known: {', '.join(known)})")
    return directory


async def migrate_and_grant(
    engine: AsyncEngine, service: str, schema: str, runtime_role: str | None
) -> dict[str, Any]:
    """Apply the missing migrations, then (if a role is named) grant it least privilege."""
    migrations = service_migrations(service)
    applied = await migrate(engine, schema, migrations)
    report: dict[str, Any] = {"service": service, "schema": schema, "applied": applied}
    if runtime_role is None:
        report["runtime_role"] = None
        return report
    async with engine.begin() as conn:
        # The lock migrate() takes: a second migrate run does not interleave with the grants.
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(:k)"), {"k": migration_lock_key(schema)}
        )
        grants = await grant_runtime_role(conn, schema, runtime_role)
    report.update(
        runtime_role=grants.role, tables=list(grants.tables), append_only=list(grants.append_only)
    )
    return report


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.migrate", description=__doc__)
    parser.add_argument("service", help="the service whose migrations to apply (intake, audit...)")
    parser.add_argument("--schema", help="its schema (default: the service's name)")
    parser.add_argument(
        "--runtime-role", help="the role to grant (default: BUREAU_DATABASE_RUNTIME_ROLE)"
    )
    parser.add_argument(
        "--check", action="store_true", help="only check the schema is at its latest migration"
    )
    args = parser.parse_args(argv)
    settings = MigrationSettings()
    schema = checked_identifier(args.schema or args.service)
    engine = make_engine(settings.database_url, schema, pool_size=1)
    try:
        if args.check:
            await require_migrated(engine, schema, service_migrations(args.service), args.service)
            report: dict[str, Any] = {"service": args.service, "schema": schema, "migrated": True}
        else:
            role = args.runtime_role or settings.database_runtime_role
            report = await migrate_and_grant(engine, args.service, schema, role)
    except (SchemaNotMigrated, RuntimeRoleRefused) as refused:
        sys.stderr.write(f"shared.migrate {args.service}: {refused}\n")
        return 1
    finally:
        await engine.dispose()
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
