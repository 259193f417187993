"""Least-privilege Postgres: what a service's runtime role may do in its own schema.

Migrations run as the schema owner (shared/migrate.py); the service process connects as its
runtime role, which this module grants, after every migration run, exactly:
- USAGE on the service's schema (not CREATE: it makes no table, function or trigger);
- SELECT, INSERT, UPDATE, DELETE on its tables, never TRUNCATE, REFERENCES or TRIGGER;
- SELECT and INSERT only on an append-only table: one that a statement trigger guards against
  UPDATE, DELETE and TRUNCATE (audit's event log, Merkle nodes and checkpoints);
- SELECT only on schema_migrations (so it can check it is at the latest migration);
- USAGE and SELECT on its sequences, EXECUTE on its functions;
- default privileges, so tables and sequences a later migration makes follow the same rule.

Only the owner may ALTER a table (so DISABLE TRIGGER) or DROP it; the runtime role is not the
owner nor a member of it, and reaches no other service's schema (PUBLIC gets no USAGE on a
schema the owner creates). grant_runtime_role refuses a role that breaks these assumptions.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import checked_identifier

TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
APPEND_ONLY_PRIVILEGES = "SELECT, INSERT"
# pg_trigger.tgtype bits (PostgreSQL's include/catalog/pg_trigger.h): DELETE 8, UPDATE 16,
# TRUNCATE 32. A trigger on all three refuses every change but INSERT.
_REFUSES_CHANGE = 8 | 16 | 32
# Schemas every role may use and which hold no service's data.
_COMMON_SCHEMAS = ("public", "pg_catalog", "information_schema", "pg_toast")


class RuntimeRoleRefused(RuntimeError):
    """The runtime role given cannot be kept to least privilege (named in the message)."""


@dataclass(frozen=True)
class RuntimeGrants:
    role: str
    schema: str
    tables: tuple[str, ...]
    append_only: tuple[str, ...]


async def append_only_tables(conn: AsyncConnection, schema: str) -> list[str]:
    """Tables of the schema that a user trigger guards against UPDATE, DELETE and TRUNCATE."""
    rows = await conn.execute(
        text(
            "SELECT DISTINCT c.relname FROM pg_trigger t"
            " JOIN pg_class c ON c.oid = t.tgrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = :s AND NOT t.tgisinternal AND t.tgenabled <> 'D'"
            " AND (t.tgtype & :bits) = :bits ORDER BY c.relname"
        ),
        {"s": schema, "bits": _REFUSES_CHANGE},
    )
    return [str(name) for (name,) in rows]


async def _check_role(conn: AsyncConnection, schema: str, role: str) -> None:
    found = (
        await conn.execute(
            text(
                "SELECT rolsuper, rolcanlogin, pg_has_role(rolname, current_user, 'USAGE'),"
                " rolname = current_user FROM pg_roles WHERE rolname = :r"
            ),
            {"r": role},
        )
    ).first()
    if found is None:
        raise RuntimeRoleRefused(
            f"runtime role {role} does not exist: create it first (deploy/local/stack.sh does "
            "on the local stack, CloudNativePG's managed roles in Kubernetes)"
        )
    superuser, _login, owner_rights, is_owner = found
    if superuser or owner_rights or is_owner:
        raise RuntimeRoleRefused(
            f"runtime role {role} is the schema owner, a superuser or a member of the owner: "
            "it would be able to alter or drop every table; give the service its own role"
        )
    others = (
        await conn.execute(
            text(
                "SELECT nspname FROM pg_namespace WHERE nspname <> :s"
                " AND nspname <> ALL(CAST(:common AS text[])) AND nspname NOT LIKE 'pg\\_%'"
                " AND has_schema_privilege(:r, oid, 'USAGE') ORDER BY nspname"
            ),
            {"s": schema, "r": role, "common": list(_COMMON_SCHEMAS)},
        )
    ).all()
    if others:
        names = ", ".join(name for (name,) in others)
        raise RuntimeRoleRefused(
            f"runtime role {role} already reaches schema(s) {names}: a runtime role must reach "
            f"only its own service's schema ({schema}); give each service its own role"
        )


async def grant_runtime_role(conn: AsyncConnection, schema: str, role: str) -> RuntimeGrants:
    """Grant `role` what a service needs in `schema`, and nothing more. Run as the owner after
    the migrations; idempotent (privileges are reset, then granted), committed by the caller."""
    s, r = checked_identifier(schema), checked_identifier(role)
    await _check_role(conn, s, r)
    guarded = await append_only_tables(conn, s)
    tables = [
        str(name)
        for (name,) in await conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = :s ORDER BY tablename"),
            {"s": s},
        )
    ]
    statements = [
        f"REVOKE ALL ON SCHEMA {s} FROM {r}",
        f"GRANT USAGE ON SCHEMA {s} TO {r}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {r}",
        f"GRANT {TABLE_PRIVILEGES} ON ALL TABLES IN SCHEMA {s} TO {r}",
        *(f"REVOKE UPDATE, DELETE ON {s}.{checked_identifier(t)} FROM {r}" for t in guarded),
        f"REVOKE ALL ON {s}.schema_migrations FROM {r}",
        f"GRANT SELECT ON {s}.schema_migrations TO {r}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {s} FROM {r}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
        f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} TO {r}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT {TABLE_PRIVILEGES} ON TABLES TO {r}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT USAGE, SELECT ON SEQUENCES TO {r}",
    ]
    for statement in statements:
        await conn.execute(text(statement))
    return RuntimeGrants(role=r, schema=s, tables=tuple(tables), append_only=tuple(guarded))
