"""Per-workload HTTP tokens on the real local stack (issue 15): the real graphical service,
started by services.sh's start_one from a caller that had sourced the people's tokens (as a human
does), with the tokens stack.sh's make_tokens wrote in a run directory of the test's own. Its
process environment (/proc/<pid>/environ) holds its own token and the verifiers of those it
admits, no other workload's token and no clear token of a principal it only verifies; another
workload's token at the route only QA may call is refused, QA's passes.

The process uses the stack's Postgres (a schema of its own, dropped afterwards) and Kafka (as the
stack's admin, on a topic prefix of its own: graphical's own Kafka user reads the shared
`bureau.` topics); the shared stack's services are not touched."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from demo.client import Bureau
from deploy.local.tokens import STATION, TOOLS
from shared.credentials import split_entries, verifier_of
from shared.db import make_engine
from tests.support.db_roles import drop_schemas
from tests.support.electrical import free_port
from tests.support.local_tokens import (
    SERVICES_SH,
    StackTokens,
    foreign_tokens,
    make_stack_tokens,
)

pytestmark = pytest.mark.integration
KAFKA = (
    "BUREAU_KAFKA_SECURITY_PROTOCOL",
    "BUREAU_KAFKA_SASL_MECHANISM",
    "BUREAU_KAFKA_USERNAME",
    "BUREAU_KAFKA_PASSWORD",
    "BUREAU_KAFKA_CA_FILE",
)


@pytest.fixture
def tokens(tmp_path: Path) -> StackTokens:
    return make_stack_tokens(tmp_path / "run")


@pytest.fixture
async def graphical(
    tokens: StackTokens, stack_env: dict[str, str], unique: str
) -> AsyncIterator[tuple[str, int]]:
    """(its URL, its pid): graphical started by services.sh from a caller holding the people's
    tokens and keymgmt's service settings."""
    kafka = "".join(f"export {name}='{stack_env[name]}'\n" for name in KAFKA)
    (tokens.creds / "graphical.kafka.env").write_text(kafka)
    port = free_port()
    caller = {
        **os.environ,
        **stack_env,
        **tokens.file(TOOLS),
        "BUREAU_SERVICE_TOKENS": tokens.file("keymgmt")["BUREAU_SERVICE_TOKENS"],
        "BUREAU_RUN_DIR": str(tokens.run_dir),
        "BUREAU_TOPIC_PREFIX": f"t{unique}",
        "BUREAU_GRAPHICAL_PORT": str(port),
        "BUREAU_KEYMGMT_URL": "http://127.0.0.1:9",
    }
    schema = f"graphical_{unique}"
    command = f"{sys.executable} -m tests.support.graphical_process {schema}"
    script = f"source {SERVICES_SH}; start_one graphical {command}"
    subprocess.run(["bash", "-c", script], env=caller, check=True, timeout=60)
    url = f"http://127.0.0.1:{port}"
    try:
        pid = int((tokens.run_dir / "pids" / "graphical.pid").read_text())
        wait_serving(url, tokens.run_dir / "logs" / "graphical.log")
        yield url, pid
    finally:
        subprocess.run(
            ["bash", "-c", f"source {SERVICES_SH}; down"], env=caller, check=False, timeout=120
        )
        engine = make_engine(stack_env["BUREAU_DATABASE_URL"], "public", pool_size=1)
        try:
            await drop_schemas(engine, schema)
        finally:
            await engine.dispose()


def wait_serving(url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/health", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    pytest.fail(f"graphical does not serve {url}: {log.read_text()[-2000:]}")


def test_the_process_holds_its_own_token_and_verifiers_only(
    tokens: StackTokens, graphical: tuple[str, int]
) -> None:
    _, pid = graphical
    environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    assert foreign_tokens(tokens, "graphical", environ) == []
    clear = tokens.clear()
    values = dict(item.partition("=")[::2] for item in environ.split("\0") if item)
    service_tokens = dict(split_entries(values["BUREAU_SERVICE_TOKENS"]))
    assert service_tokens == {"graphical": clear["graphical"], "qa": verifier_of(clear["qa"])}
    principals = dict(split_entries(values["BUREAU_PRINCIPALS"]))
    assert principals["operator:olga"] == verifier_of(clear["operator:olga"])
    for name in ("BUREAU_PEOPLE_TOKENS", "BUREAU_AUDITOR_TOKEN", "BUREAU_STATION_TOKEN"):
        assert name not in values, name


def test_only_qas_token_reads_a_card_face(tokens: StackTokens, graphical: tuple[str, int]) -> None:
    url, _ = graphical
    clear = tokens.clear()
    render = f"{url}/v1/print-jobs/{uuid.uuid4()}/render"

    def status(token: str) -> int:
        answer = httpx.get(render, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        return answer.status_code

    assert status(clear["qa"]) == 404  # admitted: there is no such face
    # Another workload's token: unknown here (graphical holds no verifier of it).
    for other in ("fulfillment", "intake", "audit", STATION, "custodian:cora"):
        assert status(clear[other]) == 401, other
    assert status(clear["graphical"]) == 403  # a service, but not the one this route serves
    assert status(clear["auditor:ann"]) == 403  # a person graphical admits, not on this route
    assert status(verifier_of(clear["qa"])) == 401  # the verifier it holds is no credential


def test_the_demo_clients_people_are_admitted_by_their_verifiers(
    tokens: StackTokens, graphical: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = graphical
    monkeypatch.setenv("BUREAU_RUN_DIR", str(tokens.run_dir))
    people = Bureau().tokens  # as the demo, the e2e helper and the benchmarks make it
    for token in (people.operator, people.second_operator, people.auditor, people.admin):
        answer = httpx.get(f"{url}/v1/printer", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code != 401, answer.text
        assert answer.status_code != 403, answer.text
    for dev in ("operator-dev-token", "admin-dev-token", "qa-dev-token"):  # the old defaults
        answer = httpx.get(f"{url}/v1/printer", headers={"Authorization": f"Bearer {dev}"})
        assert answer.status_code == 401, dev
