"""bench/faults: the fault suite at full size (issues 17 and 19). Per fault, one batch of
`--cards` cards through the whole bureau on the local stack; the fault is injected once the
batch's first card is encoded and healed after its hold; then the batch must close with every
card accounted for and nothing done twice. Prints the table (fault, cards, lost, doubled,
destroyed, recovery s, closed s, most log lines one service wrote during an outage) and, at the
end, the auditors' verifier over the whole log. The faults and the checks are the CI suite's
(tests/support/faults.py, tests/support/fault_check.py; tests/e2e/test_fault_suite.py runs
them at 4 cards a batch).

    .venv/bin/python -m bench.faults [--cards 100] [--kafka-s 10] [--postgres-s 10]
                                      [--long-kafka-s 60] [--only SUBSTRING ...]

The local stack must be up (make stack-up); the bench restarts the services (services.sh) with
its own topic prefix and stops them at the end. It kills Kafka, PostgreSQL and pcscd of that
stack: every fault heals what it broke, whatever happened.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

from demo.client import Bureau
from tests.conftest import REPO, load_stack_env
from tests.support.fault_check import FaultResult, run_fault, table, verify_audit_log
from tests.support.faults import Floor, catalogue

SERVICES = REPO / "deploy" / "local" / "services.sh"
ISSUER = "bench-faults"


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run(*argv: str, env: dict[str, str], timeout: float) -> None:
    subprocess.run(argv, env=env, cwd=REPO, check=True, timeout=timeout)


async def bench(args: argparse.Namespace) -> list[FaultResult]:
    env = {**os.environ, **load_stack_env()}
    env["BUREAU_TOPIC_PREFIX"] = f"benchfaults{os.getpid()}"
    env["BUREAU_CHECKPOINT_INTERVAL_SECONDS"] = "5"
    faults = [
        f
        for f in catalogue(args.kafka_s, args.postgres_s, args.long_kafka_s)
        if not args.only or any(word.lower() in f.name.lower() for word in args.only)
    ]
    run(sys.executable, "-m", "services.keymgmt", "ceremony", "demo-keys", "--emv",
        "--issuer", ISSUER, env=env, timeout=300)  # fmt: skip
    run("bash", str(SERVICES), "down", env=env, timeout=120)
    floor, bureau, results = Floor(env), Bureau(), list[FaultResult]()
    started = time.monotonic()
    try:  # `up` inside: a service that fails to start must not be left running by the others
        run("bash", str(SERVICES), "up", env=env, timeout=300)
        for fault in faults:
            say(f"-- {fault.name}: {args.cards} cards")
            result = await run_fault(floor, bureau, fault, args.cards, issuer=ISSUER, verify=False)
            results.append(result)
            say(table([result]).splitlines()[-1])
            say(json.dumps({"notes": result.notes, "log_lines": result.log_lines}))
            if result.problems:
                say(f"   problems: {result.problems}")
        problems = await verify_audit_log(floor, bureau)
    finally:
        run("bash", str(SERVICES), "down", env=env, timeout=120)
    say(f"\n{args.cards} cards a batch, {len(results)} faults, {time.monotonic() - started:.0f} s")
    say(table(results))
    say(f"\naudit verifier over the whole log: {'passed' if not problems else problems}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cards", type=int, default=100, help="cards per batch (per fault)")
    parser.add_argument("--kafka-s", type=float, default=10.0, help="Kafka killed for this long")
    parser.add_argument("--postgres-s", type=float, default=10.0, help="PostgreSQL stopped")
    parser.add_argument("--long-kafka-s", type=float, default=60.0, help="the long Kafka outage")
    parser.add_argument("--only", nargs="*", default=[], help="faults whose name has one of these")
    args = parser.parse_args()
    results = asyncio.run(bench(args))
    sys.exit(0 if all(r.ok for r in results) else 1)


if __name__ == "__main__":
    main()
