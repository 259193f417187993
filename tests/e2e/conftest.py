"""The whole bureau as separate processes on the local stack, as `make demo` runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from demo.client import Bureau
from tests.conftest import REPO, load_stack_env
from tests.support.otlp import OtlpReceiver, start_receiver

SERVICES = REPO / "deploy" / "local" / "services.sh"


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    """The collector every service exports its spans to (OTLP/HTTP, the standard settings)."""
    receiver, server = start_receiver()
    try:
        yield receiver
    finally:
        server.shutdown()


@pytest.fixture(scope="session")
def e2e_env(otlp: OtlpReceiver, stack_env: dict[str, str]) -> dict[str, str]:
    # stack_env (tests/conftest.py) also puts env.sh's values in os.environ: the helpers this
    # process runs (kafka_records) connect to Kafka with its SASL_SSL admin credentials.
    values = load_stack_env()
    if not values:
        pytest.fail("the local stack is not up: run `make stack-up`")
    env = {**os.environ, **values}
    env["BUREAU_TOPIC_PREFIX"] = f"e2e{os.getpid()}"
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp.endpoint
    env["OTEL_BSP_SCHEDULE_DELAY"] = "200"  # ms: spans reach the collector soon after a stage
    return env


@pytest.fixture(scope="module")
def bureau(e2e_env: dict[str, str]) -> Iterator[Bureau]:
    """Load the e2e issuers' test keys by ceremony, start every service, and stop them when the
    module is done: the feeder holds the shared readers, which later suites need free."""
    # e2e-bank's product has the full EMV profile (its PIN key and CVKs too: --emv);
    # e2e-faults loads its own PIN key (test_print_fulfillment_faults.py); e2e-purge's product
    # has the full EMV profile too (test_purge_dispatched.py).
    for issuer, extra in (("e2e-bank", ["--emv"]), ("e2e-faults", []), ("e2e-purge", ["--emv"])):
        subprocess.run(
            [sys.executable, "-m", "services.keymgmt", "ceremony", "demo-keys", *extra]
            + ["--issuer", issuer],
            env=e2e_env,
            cwd=REPO,
            check=True,
            timeout=120,
        )
    subprocess.run(["bash", str(SERVICES), "down"], env=e2e_env, check=True, timeout=120)
    try:  # `up` inside: when one service fails to start, the others are stopped too
        subprocess.run(["bash", str(SERVICES), "up"], env=e2e_env, check=True, timeout=300)
        yield Bureau()
    finally:
        subprocess.run(["bash", str(SERVICES), "down"], env=e2e_env, check=False, timeout=120)
