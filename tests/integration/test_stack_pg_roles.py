"""deploy/local/stack.sh's runtime roles on the real Postgres of the stack (issue 15): one LOGIN
role per service with a random password, kept across runs (a running service is not locked
out), written to <run>/creds/<service>.db.env for the service and to
<run>/creds/migrate-<service>.db.env for its migrate step; the migrate step grants the role, and
the role then reaches its own schema only.

The functions run sourced from stack.sh, in a run directory of the test's own, with roles and
schemas of the test's own (dropped afterwards). Roles are made by the owner role over TCP (it may
create roles) instead of the cluster's superuser: the shared stack is not restarted."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.credentials import read_exports
from shared.db import make_engine
from shared.settings import BureauSettings
from tests.conftest import REPO
from tests.support.db_roles import drop_schemas

pytestmark = pytest.mark.integration
STACK_SH = REPO / "deploy" / "local" / "stack.sh"


def make_roles(run_dir: Path, prefix: str) -> None:
    owner = make_url(BureauSettings().database_url)
    script = (
        f"source {STACK_SH}; PG_SERVICES=(audit keymgmt);"
        # The cluster's superuser is reached over the unix socket as the postgres OS user;
        # here the owner role (CREATEROLE) makes the roles, over TCP.
        " pg_psql_super() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1"
        f" -p {owner.port} -U {owner.username} -d {owner.database}; }};"
        f" pg_runtime_roles {prefix}"
    )
    env = {**os.environ, "BUREAU_RUN_DIR": str(run_dir), "PGPASSWORD": owner.password or ""}
    done = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
async def owner(stack_env: dict[str, str]) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(BureauSettings().database_url, "public", pool_size=1)
    yield engine
    await engine.dispose()


async def test_stack_roles_are_kept_and_reach_only_their_schema(
    owner: AsyncEngine, tmp_path: Path, unique: str
) -> None:
    prefix, audit, keymgmt = f"t{unique}_", f"stkaudit_{unique}", f"stkkm_{unique}"
    creds = tmp_path / "creds"
    try:
        make_roles(tmp_path, prefix)
        service = read_exports(creds / "audit.db.env")
        migration = read_exports(creds / "migrate-audit.db.env")
        assert service["BUREAU_MIGRATE_ON_START"] == "false"
        assert make_url(service["BUREAU_DATABASE_URL"]).username == f"{prefix}audit"
        assert migration["BUREAU_DATABASE_URL"] == BureauSettings().database_url
        assert migration["BUREAU_DATABASE_RUNTIME_ROLE"] == f"{prefix}audit"
        assert stat.S_IMODE(creds.stat().st_mode) == 0o700
        assert stat.S_IMODE((creds / "audit.db.env").stat().st_mode) == 0o600
        keymgmt_password = make_url(read_exports(creds / "keymgmt.db.env")["BUREAU_DATABASE_URL"])
        assert keymgmt_password.password != make_url(service["BUREAU_DATABASE_URL"]).password

        make_roles(tmp_path, prefix)  # again, as `stack.sh up` on a running stack
        assert read_exports(creds / "audit.db.env") == service

        # The migrate step as services.sh runs it: its own credential file, then the CLI.
        for name, schema in (("keymgmt", keymgmt), ("audit", audit)):
            env = {**os.environ, **read_exports(creds / f"migrate-{name}.db.env")}
            done = subprocess.run(
                [sys.executable, "-m", "shared.migrate", name, "--schema", schema],
                env=env,
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            assert f'"runtime_role": "{prefix}{name}"' in done.stdout

        engine = make_engine(service["BUREAU_DATABASE_URL"], audit, pool_size=1)
        try:
            async with engine.connect() as conn:
                await conn.execute(text(f"SELECT count(*) FROM {audit}.events"))
            with pytest.raises(DBAPIError, match="permission denied for schema"):
                async with engine.connect() as conn:
                    await conn.execute(text(f"SELECT count(*) FROM {keymgmt}.card_pins"))
        finally:
            await engine.dispose()
    finally:
        await drop_schemas(owner, audit, keymgmt)
        async with owner.begin() as conn:
            for name in ("audit", "keymgmt"):
                await conn.execute(text(f"DROP ROLE IF EXISTS {prefix}{name}"))
