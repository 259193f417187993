"""Stop the local stack's PostgreSQL hard and start it again (deploy/local/stack.sh keeps its
cluster in $BUREAU_RUN_DIR/pg, run by the `postgres` user when the stack runs as root)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def pg_bin() -> Path:
    """PostgreSQL's bin directory, found as deploy/local/stack.sh finds it: $PG_BIN, else 15 (the
    contract), else the newest under /usr/lib/postgresql."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    preferred = Path("/usr/lib/postgresql/15/bin")
    if (preferred / "pg_ctl").exists():
        return preferred
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else preferred


PG_BIN = pg_bin()


def _as_pg(*command: str) -> subprocess.CompletedProcess[str]:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run(
        [*prefix, *command], cwd="/", capture_output=True, text=True, timeout=120, check=False
    )


def data_dir(run_dir: str) -> Path:
    return Path(run_dir) / "pg"


def postgres_running(run_dir: str) -> bool:
    return _as_pg(str(PG_BIN / "pg_ctl"), "-D", str(data_dir(run_dir)), "status").returncode == 0


def stop_postgres_hard(run_dir: str) -> None:
    """`pg_ctl stop -m immediate`: every backend killed, no checkpoint (crash recovery on start)."""
    done = _as_pg(
        str(PG_BIN / "pg_ctl"), "-D", str(data_dir(run_dir)), "-m", "immediate", "-w", "stop"
    )
    if done.returncode != 0:
        raise RuntimeError(f"pg_ctl stop failed: {done.stderr.strip()}")


def start_postgres(run_dir: str) -> None:
    """Start the cluster as stack.sh does (its settings are in the cluster's own config)."""
    if postgres_running(run_dir):
        return
    log = Path(run_dir) / "logs" / "postgres.log"
    done = _as_pg(
        str(PG_BIN / "pg_ctl"), "-D", str(data_dir(run_dir)), "-l", str(log), "-w", "-t", "60",
        "start",
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()} {done.stdout.strip()}")
