"""The local stack's per-workload tokens (deploy/local/tokens.py) as the tests read them: made by
stack.sh's own `make_tokens` in a run directory of the test's, and a workload's environment as
services.sh's `load_creds` gives it."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deploy.local.tokens import OWN, PEOPLE, STATION, TOOLS, WORKLOADS
from shared.credentials import read_exports, split_entries
from tests.conftest import REPO

STACK_SH = REPO / "deploy" / "local" / "stack.sh"
SERVICES_SH = REPO / "deploy" / "local" / "services.sh"


@dataclass(frozen=True)
class StackTokens:
    """Every clear token of a stack, by owner: a workload (`intake`, ...; its other secrets
    `intake/BUREAU_WEBHOOK_KEY`), `station-a`'s (electrical's) or a person (`operator:olga`)."""

    run_dir: Path

    @property
    def creds(self) -> Path:
        return self.run_dir / "creds"

    def file(self, workload: str) -> dict[str, str]:
        return read_exports(self.creds / f"{workload}.tokens.env")

    def clear(self) -> dict[str, str]:
        found = {}
        for workload in WORKLOADS:
            own = dict(split_entries(self.file(workload)["BUREAU_SERVICE_TOKENS"])).get(workload)
            if own:
                found[workload] = own
        found[STATION] = self.file("electrical")["BUREAU_STATION_TOKEN"]
        for workload, names in OWN.items():  # intake's idempotency secret and webhook key
            found |= {f"{workload}/{name}": self.file(workload)[name] for name in names}
        found |= dict(split_entries(self.file(TOOLS)["BUREAU_PEOPLE_TOKENS"]))
        assert set(found) >= {*PEOPLE, STATION}
        return found

    def owned_by(self, workload: str) -> set[str]:
        """The owners whose clear token the workload may hold: itself (electrical: the station)."""
        return {workload} | ({STATION} if workload == "electrical" else set())


def make_stack_tokens(run_dir: Path) -> StackTokens:
    """stack.sh's `make_tokens`, sourced (nothing else of the stack runs)."""
    done = subprocess.run(
        ["bash", "-c", f"source {STACK_SH}; make_tokens"],
        env={**os.environ, "BUREAU_RUN_DIR": str(run_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return StackTokens(run_dir)


def loaded_env(tokens: StackTokens, workload: str, caller: dict[str, str]) -> dict[str, str]:
    """The environment services.sh's `load_creds` gives a workload started from `caller`'s."""
    done = subprocess.run(
        ["bash", "-c", f"source {SERVICES_SH}; load_creds {workload}; env -0"],
        env={**caller, "BUREAU_RUN_DIR": str(tokens.run_dir)},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    pairs = (item.partition(b"=") for item in done.stdout.split(b"\0") if item)
    return {k.decode(): v.decode(errors="replace") for k, _, v in pairs}


def foreign_tokens(tokens: StackTokens, workload: str, environ: str) -> list[str]:
    """The owners (other workloads, people, stations) whose clear token `environ` holds."""
    own = tokens.owned_by(workload)
    clear = tokens.clear().items()
    return sorted(who for who, t in clear if who.split("/")[0] not in own and t in environ)
