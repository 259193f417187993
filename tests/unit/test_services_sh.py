"""deploy/local/services.sh tells a zombie from a live process, and its keeper starts a service
again when it exits (a service whose task cannot run exits on purpose). Run on real processes,
in a run directory of the test's own: the shared stack is not touched."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

SERVICES_SH = REPO / "deploy" / "local" / "services.sh"


def sh(run_dir: Path, script: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BUREAU_RUN_DIR": str(run_dir)}
    return subprocess.run(
        ["bash", "-c", f"source {SERVICES_SH}; {script}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_zombie_is_not_alive_and_a_live_process_is(tmp_path: Path) -> None:
    # A parent that never reaps its exited child keeps it a zombie; kill -0 still succeeds.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time\n"
            "pid = os.fork()\n"
            "if pid == 0: os._exit(0)\n"
            "print(pid, flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        zombie = int(parent.stdout.readline())
        time.sleep(0.2)
        assert Path(f"/proc/{zombie}/stat").read_text().split(") ")[1][0] == "Z"
        assert sh(tmp_path, f"kill -0 {zombie}").returncode == 0  # the old check: "alive"
        assert sh(tmp_path, f"proc_alive {zombie}").returncode == 1
        assert sh(tmp_path, f"proc_alive {parent.pid}").returncode == 0
        (tmp_path / "pids").mkdir(parents=True, exist_ok=True)
        (tmp_path / "pids" / "qa.pid").write_text(f"{zombie}\n")
        assert sh(tmp_path, "alive qa").returncode == 1
    finally:
        parent.kill()
        parent.wait()
    assert sh(tmp_path, "proc_alive 999999999").returncode == 1


def test_the_keeper_starts_an_exited_service_again_and_down_stops_both(tmp_path: Path) -> None:
    started = sh(tmp_path, 'REPO=/; start_one fake sleep 300; cat "$RUN/pids/fake.pid"')
    assert started.returncode == 0, started.stderr
    first = int(started.stdout.split()[-1])
    pid_file = tmp_path / "pids" / "fake.pid"
    try:
        assert sh(tmp_path, "alive fake && kept fake").returncode == 0
        os.kill(first, 9)  # the service dies (or exits because a task gave up)
        deadline = time.monotonic() + 10
        while int(pid_file.read_text()) == first and time.monotonic() < deadline:
            time.sleep(0.1)
        second = int(pid_file.read_text())
        assert second != first
        assert sh(tmp_path, "alive fake").returncode == 0
        log = (tmp_path / "logs" / "fake.log").read_text()
        assert "services: fake exited with status 137; starting it again in 1 s" in log
    finally:
        stopped = sh(tmp_path, "SERVICES=(fake); down")
    assert stopped.returncode == 0, stopped.stderr
    assert not Path(f"/proc/{second}").exists() or sh(tmp_path, f"proc_alive {second}").returncode
    assert sh(tmp_path, "alive fake || kept fake").returncode == 1


def test_the_migrate_step_gets_the_owner_and_the_service_its_runtime_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stack.sh's two credential files (issue 15): the migrate step runs with the owner's URL and
    the role to grant; the service process then gets its runtime role alone."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "migrate-svc.db.env").write_text(
        "export BUREAU_DATABASE_URL='postgresql+asyncpg://owner:o@127.0.0.1/db'\n"
        "export BUREAU_DATABASE_RUNTIME_ROLE='bureau_svc'\n"
    )
    (creds / "svc.db.env").write_text(
        "export BUREAU_DATABASE_URL='postgresql+asyncpg://bureau_svc:r@127.0.0.1/db'\n"
        "export BUREAU_MIGRATE_ON_START='false'\n"
    )
    fake = tmp_path / "fake-python"  # records its arguments and database settings, then waits
    fake.write_text(
        "#!/bin/bash\n"
        'out="$RUN_OUT/$2"\n'
        'echo "$* | ${BUREAU_DATABASE_URL:-} | ${BUREAU_DATABASE_RUNTIME_ROLE:-unset}'
        ' | ${BUREAU_MIGRATE_ON_START:-unset}" >"$out"\n'
        "[[ $2 == shared.migrate ]] || exec sleep 300\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("RUN_OUT", str(tmp_path))
    # What services.sh's `up` exports from env.sh: the owner's URL, for tests and tools.
    monkeypatch.setenv("BUREAU_DATABASE_URL", "postgresql+asyncpg://owner:o@127.0.0.1/db")
    try:
        done = sh(
            tmp_path,
            f"PY={fake}; migrate_one svc && start_one svc $PY -m services.svc"
            " && start_one witness $PY -m services.witness",
        )
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
            (tmp_path / f"services.{name}").exists() for name in ("svc", "witness")
        ):
            time.sleep(0.1)
        migrated = (tmp_path / "shared.migrate").read_text().strip()
        assert migrated == (
            "-m shared.migrate svc | postgresql+asyncpg://owner:o@127.0.0.1/db | bureau_svc | unset"
        )
        served = (tmp_path / "services.svc").read_text().strip()
        assert (
            served
            == "-m services.svc | postgresql+asyncpg://bureau_svc:r@127.0.0.1/db | unset | false"
        )
        # A workload with no database role of its own does not get the owner's credential.
        witness = (tmp_path / "services.witness").read_text().strip()
        assert witness == "-m services.witness |  | unset | unset"
        # No migrate file (a stack from before issue 15): nothing runs, the service migrates.
        assert sh(tmp_path, f"PY={fake}; migrate_one other").returncode == 0
        assert not (tmp_path / "logs" / "other.log").exists()
    finally:
        sh(tmp_path, "SERVICES=(svc witness); down")
