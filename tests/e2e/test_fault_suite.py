"""The fault suite, CI size (issues 17 and 19): per fault, a small batch through the whole
bureau on the local stack, the fault injected once its first card is encoded, healed, and then
the batch must close with every card accounted for, nothing done twice, every /ready green again
(the recovery time is printed), and during an outage each service writes a handful of log lines,
not one per retry. At the end, the auditors' verifier passes over the whole log. Every fault
heals what it broke before its test ends, whatever the test found. Full size: bench/faults.py
(docs/faults.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from demo.client import Bureau
from tests.support.fault_check import FaultResult, run_fault, table, verify_audit_log
from tests.support.faults import Fault, Floor, catalogue

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

CARDS = 4
FAULTS = catalogue(kafka_s=10.0, postgres_s=10.0, long_kafka_s=None)
# Per service, during an outage: one line when a dependency goes and one when it is back,
# per task that meets it, and what the restarts write; thousands would drown the one that matters.
LOG_LINES_LIMIT = 40
# A long-lived dev stack gathers every run's topics; a fresh one (CI) holds a few hundred logs.
KAFKA_KILL_MAX_LOGS = 3000


@pytest.fixture(scope="module")
def e2e_env(e2e_env: dict[str, str]) -> dict[str, str]:
    """Checkpoints every 5 s, so that one soon covers the last batch for the verifier."""
    return {**e2e_env, "BUREAU_CHECKPOINT_INTERVAL_SECONDS": "5"}


@pytest.fixture(scope="module")
def results() -> list[FaultResult]:
    return []


def _name(fault: Fault) -> str:
    return fault.name.replace(" ", "-")


def partition_logs(env: dict[str, str]) -> int:
    data = Path(env["BUREAU_RUN_DIR"]) / "kafka" / "data"
    return sum(1 for p in data.iterdir() if p.is_dir() and "-" in p.name) if data.exists() else 0


@pytest.mark.parametrize("fault", FAULTS, ids=_name)
async def test_a_batch_under_the_fault_closes_with_every_card_once(
    fault: Fault, bureau: Bureau, e2e_env: dict[str, str], results: list[FaultResult]
) -> None:
    if fault.name.startswith("Kafka") and (logs := partition_logs(e2e_env)) > KAFKA_KILL_MAX_LOGS:
        pytest.skip(
            f"the stack's broker holds {logs} partition logs: after a kill it recovers each"
            " for minutes, and its heap ran out doing so (docs/faults.md); run it on a fresh"
            " stack, or bench.faults --only Kafka"
        )
    result = await run_fault(Floor(e2e_env), bureau, fault, CARDS, verify=False)
    results.append(result)
    sys.stdout.write(f"\n{table([result])}\n{result.notes} {result.log_lines}\n")
    assert result.problems == []
    assert (result.lost, result.doubled) == (0, 0)
    assert result.recovery_s is not None
    noisy = {name: n for name, n in result.log_lines.items() if n > LOG_LINES_LIMIT}
    assert noisy == {}, f"log lines written during the outage: {result.log_lines}"


async def test_the_auditors_verifier_passes_after_every_fault(
    bureau: Bureau, e2e_env: dict[str, str], results: list[FaultResult]
) -> None:
    sys.stdout.write(f"\n{table(results)}\n")
    # Audit checkpoints about once a minute; a slow stack may need more than one period.
    assert await verify_audit_log(Floor(e2e_env), bureau, timeout=300) == []
