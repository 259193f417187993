"""Per-workload secrets (deploy/k8s/make_secrets.py): each Deployment's Secret holds its own
token and only the verifiers of those its routes admit; the floor agents' files hold only
their own token; the tool never overwrites credentials."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from deploy.k8s.make_secrets import CHECKS, Credentials, main
from services.electrical.settings import ElectricalSettings
from services.qa.settings import QaSettings
from shared.auth import StaticTokens
from shared.credentials import VERIFIER_PREFIX, split_entries, verifier_of
from tests.support.k8s import OVERLAYS, REPO, of_kind, render
from tests.support.k8s_env import (
    PEOPLE,
    route_admissions,
    service_app,
    settings_from,
    strong_secret,
)

ISSUER_RECORDS = {"issuer"}  # issuers are intake's records, checked at intake (GET /v1/whoami)
# Routes whose role check admits any service and whose handler then names the one it serves.
NARROWED = {("graphical", "GET", "/v1/print-jobs/{card_id}/render"): ("qa",)}


def admitted(name: str) -> tuple[set[str], set[str]]:
    """(roles, services) the service's routes admit; services `*` when any may call."""
    roles: set[str] = set()
    services: set[str] = set()
    for (method, path), admits in route_admissions(service_app(name)).items():
        roles |= admits.roles - ISSUER_RECORDS
        if "service" in admits.roles:
            named = admits.services or NARROWED.get((name, method, path), ("*",))
            services |= set(named)
    return roles - {"service"}, services


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_each_workload_gets_the_verifiers_of_exactly_the_roles_its_routes_admit(
    name: str,
) -> None:
    roles, services = admitted(name)
    checks = CHECKS[name]
    assert set(checks.roles) == roles, name
    if "*" in services:  # a route any service may call: every service that holds a token
        services = (services - {"*"}) | {"intake", "graphical", "fulfillment", "qa", "audit"}
    assert set(checks.services) == services, name


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_a_workloads_secret_holds_its_own_token_and_verifiers_only(name: str) -> None:
    credentials = Credentials.make(PEOPLE)
    data = credentials.manifests()[f"{name}-credentials"]["stringData"]
    own = dict(split_entries(data["service-tokens"])).get(name)
    for other, token in credentials.services.items():
        if other != name:
            assert token not in str(data), f"{name} holds {other}'s token"
    for who, token in credentials.principals.items():
        assert token not in str(data), f"{name} holds {who}'s token"
    for entry, value in split_entries(data["service-tokens"]) + split_entries(data["principals"]):
        assert entry == name or value.startswith(VERIFIER_PREFIX), (name, entry)
    if name in credentials.services:
        assert own == credentials.services[name]


async def test_keymgmt_admits_a_station_and_a_planner_by_their_verifiers_only() -> None:
    """keymgmt admits a station (its script) and an operator (station planning: PUT
    /v1/perso/batches/{batch_id}/stations), each by its verifier; never intake's own token."""
    credentials = Credentials.make(PEOPLE)
    keymgmt = credentials.manifests()["keymgmt-credentials"]["stringData"]
    tokens = StaticTokens(keymgmt["principals"])
    station = await tokens(credentials.principals["station:station-07"])
    assert station is not None
    assert (station.role, station.name) == ("station", "station-07")
    planner = await tokens(credentials.principals["operator:olga"])
    assert planner is not None
    assert (planner.role, planner.name) == ("operator", "olga")
    assert await tokens(credentials.services["intake"]) is None


def test_the_tool_writes_private_files_and_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "creds"
    main(["--out", str(out), *PEOPLE])
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.relative_to(out).as_posix() for p in files} >= {
        "k8s/intake-credentials.json",
        "k8s/keymgmt-credentials.json",
        "stations/station-07/station-token",
        "qa/service-tokens",
        "people/operator_olga",
    }
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    station = (out / "stations" / "station-07" / "station-token").read_text()
    assert station not in (out / "k8s" / "keymgmt-credentials.json").read_text()
    before = (out / "people" / "operator_olga").read_text()
    with pytest.raises(SystemExit, match="never overwrites"):
        main(["--out", str(out), *PEOPLE])
    assert (out / "people" / "operator_olga").read_text() == before
    with pytest.raises(SystemExit, match="is not role:name"):
        main(["--out", str(tmp_path / "other"), "wizard:merlin"])


def station_env(agent: str, credentials: Path) -> dict[str, str]:
    """The agent's env file (deploy/station/<agent>.env.example) plus its credential files,
    as cardbureau-agent-exec exports them (file station-token -> BUREAU_STATION_TOKEN)."""
    env = {}
    for line in (REPO / "deploy" / "station" / f"{agent}.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    for file in credentials.iterdir():
        env["BUREAU_" + file.name.upper().replace("-", "_")] = file.read_text()
    return env


def test_each_floor_agent_starts_in_prod_on_its_own_credentials_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "creds"
    main(["--out", str(out), *PEOPLE])
    url = f"postgresql+asyncpg://station_07:{strong_secret()}@pg.floor:5432/bureau?ssl=require"
    station = out / "stations" / "station-07"
    for made in (station, out / "qa"):
        (made / "database-url").write_text(url)
        (made / "kafka-password").write_text(strong_secret())
    electrical = settings_from(ElectricalSettings, station_env("electrical", station), monkeypatch)
    qa = settings_from(QaSettings, station_env("qa", out / "qa"), monkeypatch)
    assert isinstance(electrical, ElectricalSettings)
    assert isinstance(qa, QaSettings)
    for agent in (electrical, qa):
        assert agent.environment == "prod"
        assert agent.principals == ""  # it admits no one: no one's verifier
    assert electrical.service_tokens == ""  # it calls as its station, never as a service
    qa_token = (out / "qa" / "service-tokens").read_text().removeprefix("qa=")
    assert split_entries(qa.service_tokens) == [("qa", qa_token)]
    keymgmt = (out / "k8s" / "keymgmt-credentials.json").read_text()
    assert f"station:{electrical.station_id}={verifier_of(electrical.station_token)}" in keymgmt


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_deployment_refers_to_its_own_credentials_only(overlay: str) -> None:
    for deployment in of_kind(render(overlay), "Deployment"):
        name = deployment["metadata"]["name"]
        text = yaml.safe_dump(deployment)
        for other in CHECKS:
            if other != name:
                assert f"{other}-credentials" not in text, f"{name} mounts {other}'s credentials"
        assert "cardbureau-service-tokens" not in text  # the old Secret every pod shared
        assert "cardbureau-principals" not in text
        if name in CHECKS:
            assert f"{name}-credentials" in text, name
