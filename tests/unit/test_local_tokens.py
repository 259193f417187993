"""The local stack's HTTP tokens (deploy/local/tokens.py, run by stack.sh's make_tokens): one
random token per principal, each workload's file holding its own token and only the verifiers
of those it admits, the people's tokens in tools.tokens.env for tools only, private modes, made
once per stack; and services.sh's load_creds gives a workload nothing else, whatever its
caller's environment held. Run in a run directory of the test's own."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from deploy.k8s.make_secrets import CHECKS, SERVICE_CALLERS
from deploy.local.tokens import PEOPLE, STATION, TOOLS, WORKLOADS, main
from services.audit.settings import AuditSettings
from services.electrical.settings import ElectricalSettings
from services.fulfillment.settings import FulfillmentSettings
from services.graphical.settings import GraphicalSettings
from services.intake.settings import IntakeSettings
from services.keymgmt.settings import KeymgmtSettings
from services.qa.settings import QaSettings
from shared.auth import StaticTokens
from shared.credentials import (
    VERIFIER_PREFIX,
    people_tokens,
    production_problems,
    split_entries,
    verifier_of,
)
from shared.settings import OPAQUE_SECRETS, BureauSettings
from tests.support.local_tokens import (
    SERVICES_SH,
    StackTokens,
    foreign_tokens,
    loaded_env,
    make_stack_tokens,
)


@pytest.fixture
def tokens(tmp_path: Path) -> StackTokens:
    return make_stack_tokens(tmp_path / "run")


@pytest.mark.parametrize("workload", WORKLOADS)
def test_a_workloads_file_holds_its_own_token_and_verifiers_only(
    tokens: StackTokens, workload: str
) -> None:
    values = tokens.file(workload)
    assert foreign_tokens(tokens, workload, str(values)) == []
    for setting in ("BUREAU_SERVICE_TOKENS", "BUREAU_PRINCIPALS"):
        assert setting in values, f"{workload} would fall back to the development {setting}"
        for entry, value in split_entries(values[setting]):
            assert entry == workload or value.startswith(VERIFIER_PREFIX), (workload, entry)
    admitted = {who.split("=")[0] for who in values["BUREAU_PRINCIPALS"].split(",") if who}
    roles = CHECKS[workload].roles if workload in CHECKS else ()
    assert admitted == {who for who in (*PEOPLE, STATION) if who.split(":")[0] in roles}


def test_the_verifiers_admit_their_principal_and_no_other(tokens: StackTokens) -> None:
    clear = tokens.clear()
    keymgmt = tokens.file("keymgmt")
    services = dict(split_entries(keymgmt["BUREAU_SERVICE_TOKENS"]))
    assert services["qa"] == verifier_of(clear["qa"])
    assert "electrical" not in services  # electrical calls keymgmt as its station
    assert dict(split_entries(keymgmt["BUREAU_PRINCIPALS"]))[STATION] == verifier_of(clear[STATION])
    graphical = tokens.file("graphical")
    assert dict(split_entries(graphical["BUREAU_SERVICE_TOKENS"])).keys() == {"graphical", "qa"}
    assert tokens.file("electrical")["BUREAU_SERVICE_TOKENS"] == ""
    assert tokens.file("witness") == {"BUREAU_SERVICE_TOKENS": "", "BUREAU_PRINCIPALS": ""}


async def test_keymgmt_admits_the_station_and_planners_fulfillment_not_the_station(
    tokens: StackTokens,
) -> None:
    clear = tokens.clear()
    registry = StaticTokens(tokens.file("keymgmt")["BUREAU_PRINCIPALS"])
    station = await registry(clear[STATION])
    assert station is not None
    assert (station.role, station.name) == ("station", "station-a")
    planner = await registry(clear["operator:olga"])  # reassigns batches to stations
    assert planner is not None
    assert planner.role == "operator"
    fulfillment = StaticTokens(tokens.file("fulfillment")["BUREAU_PRINCIPALS"])
    assert await fulfillment(clear[STATION]) is None  # operators only


def test_the_tools_file_holds_the_people_only(tokens: StackTokens) -> None:
    clear = tokens.clear()
    tools = tokens.file(TOOLS)
    assert set(tools) == {"BUREAU_PEOPLE_TOKENS", "BUREAU_AUDITOR_TOKEN"}
    assert people_tokens(tokens.run_dir) == {who: clear[who] for who in PEOPLE}
    assert tools["BUREAU_AUDITOR_TOKEN"] == clear["auditor:ann"]
    for owner in (*WORKLOADS, STATION):
        if owner in clear:
            assert clear[owner] not in str(tools), f"the tools' file holds {owner}'s token"


def test_files_are_private_and_tokens_strong_and_distinct(
    tokens: StackTokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stat.S_IMODE(tokens.creds.stat().st_mode) == 0o700
    for path in tokens.creds.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    clear = tokens.clear()
    assert len(set(clear.values())) == len(clear)
    for workload in ("intake", "keymgmt", "graphical", "qa", "fulfillment", "audit"):
        with monkeypatch.context() as env:  # the workload's settings, as its process reads them
            for name, value in tokens.file(workload).items():
                env.setenv(name, value)
            settings = BureauSettings(environment="test", database_url="postgresql://x")
            assert production_problems(settings.credentials(), OPAQUE_SECRETS) == []
    for name, value in tokens.file("electrical").items():
        monkeypatch.setenv(name, value)
    electrical = ElectricalSettings(environment="test", database_url="postgresql://x")
    assert electrical.station_token == clear[STATION]
    assert production_problems(electrical.credentials(), OPAQUE_SECRETS) == []


def test_a_second_run_keeps_the_tokens_and_a_lost_file_makes_them_afresh(
    tokens: StackTokens,
) -> None:
    first = tokens.clear()
    (tokens.creds / "graphical.tokens.env").chmod(0o644)
    make_stack_tokens(tokens.run_dir)
    assert tokens.clear() == first  # a running service is not locked out
    assert stat.S_IMODE((tokens.creds / "graphical.tokens.env").stat().st_mode) == 0o600
    (tokens.creds / "qa.tokens.env").unlink()
    main(["--creds-dir", str(tokens.creds)])
    again = tokens.clear()
    assert set(again) == set(first)
    assert not set(again.values()) & set(first.values())


@pytest.mark.parametrize("workload", WORKLOADS)
def test_load_creds_gives_a_workload_nothing_its_caller_held(
    tokens: StackTokens, workload: str
) -> None:
    clear = tokens.clear()
    # A human who sourced the people's file, and carried another workload's settings.
    caller = {
        **os.environ,
        **tokens.file(TOOLS),
        "BUREAU_WITNESS_KEY_READER": clear["auditor:ann"],
        "BUREAU_STATION_TOKEN": clear[STATION],
        "BUREAU_SERVICE_TOKENS": tokens.file("keymgmt")["BUREAU_SERVICE_TOKENS"],
    }
    env = loaded_env(tokens, workload, caller)
    assert foreign_tokens(tokens, workload, "\n".join(env.values())) == []
    held = {k: v for k, v in env.items() if k in tokens.file(workload)}
    assert held == tokens.file(workload)


def test_services_up_refuses_a_stack_without_tokens(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "env.sh").write_text("")  # a stack made before per-workload tokens
    done = subprocess.run(
        ["bash", str(SERVICES_SH), "up"],
        env={**os.environ, "BUREAU_RUN_DIR": str(run)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert f"no {run}/creds/tools.tokens.env" in done.stderr


def test_the_witness_key_is_read_as_the_auditor(tokens: StackTokens) -> None:
    done = subprocess.run(
        ["bash", "-c", f"source {SERVICES_SH}; auditor_header"],
        env={**os.environ, "BUREAU_RUN_DIR": str(tokens.run_dir)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.stdout == f"Authorization: Bearer {tokens.clear()['auditor:ann']}\n"


SETTINGS: dict[str, type[BureauSettings]] = {
    "intake": IntakeSettings,
    "keymgmt": KeymgmtSettings,
    "electrical": ElectricalSettings,
    "graphical": GraphicalSettings,
    "qa": QaSettings,
    "fulfillment": FulfillmentSettings,
    "audit": AuditSettings,
}


@pytest.mark.parametrize("workload", sorted(SETTINGS))
def test_each_service_reads_its_file_and_has_the_token_it_calls_with(
    tokens: StackTokens, workload: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in tokens.file(workload).items():
        monkeypatch.setenv(name, value)
    settings = SETTINGS[workload](environment="test")
    clear = tokens.clear()
    if workload in SERVICE_CALLERS:  # its bootstrap's KeymgmtClient: settings.token_for(NAME)
        assert settings.token_for(workload) == clear[workload]
    else:
        with pytest.raises(ValueError, match="has no entry"):
            settings.token_for(workload)
    given = [c for c in settings.credentials() if c.setting in tokens.file(workload)]
    assert production_problems(given, OPAQUE_SECRETS) == []  # strong, each in one place
