"""A private Kafka broker made by deploy/local/stack.sh itself (`kafka-up`: the same TLS, SCRAM
users, ACLs and topics as the shared stack), on free ports in a run directory of its own, for
tests and benchmarks that need the secured broker whatever the shared stack runs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shared.kafka_access import WORKLOADS
from shared.kafka_client import KafkaSecurity

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "deploy" / "local" / "stack.sh"


@dataclass(frozen=True)
class PrivateKafka:
    run_dir: Path
    bootstrap: str
    ca_file: str
    admin: KafkaSecurity
    workloads: dict[str, KafkaSecurity]

    def as_(self, workload: str) -> KafkaSecurity:
        return self.workloads[workload]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def read_creds(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            values[name] = value.strip("'")
    return values


def security_of(values: dict[str, str]) -> KafkaSecurity:
    return KafkaSecurity(
        protocol=values["BUREAU_KAFKA_SECURITY_PROTOCOL"],
        mechanism=values["BUREAU_KAFKA_SASL_MECHANISM"],
        username=values["BUREAU_KAFKA_USERNAME"],
        password=values["BUREAU_KAFKA_PASSWORD"],
        ca_file=values["BUREAU_KAFKA_CA_FILE"],
    )


def _stack(run_dir: Path, ports: list[int], command: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "BUREAU_RUN_DIR": str(run_dir),
        "KAFKA_PORT": str(ports[0]),
        "KAFKA_CONTROLLER_PORT": str(ports[1]),
        "KAFKA_BROKER_PORT": str(ports[2]),
    }
    return subprocess.run(  # noqa: S603 - our own script, fixed arguments
        ["bash", str(STACK), command], env=env, capture_output=True, text=True, timeout=240
    )


@contextmanager
def private_kafka() -> Iterator[PrivateKafka]:
    """Start the broker (about 15 s), yield how to reach it as admin and as each workload,
    then stop it and remove its directory."""
    jars = Path(os.environ.get("BUREAU_RUN_DIR", REPO / ".run")) / "opt"
    if not (jars / "kafka" / "lib").is_dir():
        raise RuntimeError(f"no Kafka jars in {jars}: run deploy/local/bootstrap.sh")
    run_dir = Path(tempfile.mkdtemp(prefix="kafka-private-", dir="/tmp"))
    (run_dir / "opt").symlink_to(jars)
    ports = free_ports(3)
    try:
        started = _stack(run_dir, ports, "kafka-up")
        if started.returncode != 0:
            raise RuntimeError(f"stack.sh kafka-up failed:\n{started.stderr[-3000:]}")
        ca_file = str(run_dir / "kafka" / "tls" / "ca.crt")
        admin_password = (run_dir / "kafka" / "admin.password").read_text().strip()
        yield PrivateKafka(
            run_dir=run_dir,
            bootstrap=f"127.0.0.1:{ports[0]}",
            ca_file=ca_file,
            admin=KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "admin", admin_password, ca_file),
            workloads={
                w: security_of(read_creds(run_dir / "creds" / f"{w}.kafka.env")) for w in WORKLOADS
            },
        )
    finally:
        _stack(run_dir, ports, "kafka-down")
        shutil.rmtree(run_dir, ignore_errors=True)
