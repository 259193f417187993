"""A PostgreSQL cluster of a test's own, to stop hard and start again without touching the
stack's: initdb in a temporary directory, its own port, listening on 127.0.0.1 only, trust
authentication for its one superuser. The binaries are the stack's (postgres_fault.pg_bin)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.support.postgres_fault import PG_BIN

_OS_USER = "postgres" if os.geteuid() == 0 else None  # PostgreSQL refuses to run as root


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivatePostgres:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bureau-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        if _OS_USER is not None:
            shutil.chown(self.root, _OS_USER)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
            "--no-sync",
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        prefix = ["runuser", "-u", _OS_USER, "--"] if _OS_USER is not None else []
        done = subprocess.run(
            [*prefix, str(PG_BIN / tool), *args],
            cwd="/",
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stderr.strip()} {done.stdout.strip()}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
            " -c fsync=off -c full_page_writes=off"
        )
        log = str(self.root / "postgres.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop_hard(self) -> None:
        """Every backend killed at once, no checkpoint: what the fault suite does to the stack's."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except RuntimeError:
            pass  # not running
        shutil.rmtree(self.root, ignore_errors=True)
