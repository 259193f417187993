"""Give the local Kafka its principals, ACLs and topics.

    python deploy/local/kafka/access.py apply --node-bootstrap 127.0.0.1:19094 \\
        --client-bootstrap 127.0.0.1:19092 --tls-dir .run/kafka/tls --creds-dir .run/creds \\
        --admin-password-file .run/kafka/admin.password [--prefix bureau]
    python deploy/local/kafka/access.py grant --prefix e2e1234

`grant` (deploy/local/services.sh, before it starts the services) gives the workloads the same
ACLs, and the topics, for another topic prefix (an e2e run's, a benchmark's), connected as the
`admin` of BUREAU_KAFKA_* in the environment; it only adds, and the next `apply` removes them.

`apply` (deploy/local/stack.sh on `up`) connects as the node itself (mutual TLS on the BROKER
listener: CN=kafka-node is a super user), so it works on a fresh cluster and on one formatted
before SCRAM users existed. Then:
- the SCRAM-SHA-512 users: `admin` (super user, for tests and tools: .run/env.sh) and one per
  workload of shared/kafka_access.py, each with its password kept in
  <creds>/<workload>.kafka.env (made once, kept across runs: running services keep working);
- each workload's ACLs exactly as shared/kafka_access.py declares them (missing ones created,
  any other ACL of that principal deleted);
- the workloads' topics, so a service that only reads a topic never has to create it;
- a check that `admin` logs in over SASL_SSL on the client listener.
Library: confluent-kafka (librdkafka's AdminClient: SCRAM credentials, ACLs, topics).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from shared.kafka_access import WORKLOADS, Grant, all_grants, topics  # noqa: E402 - path above

ADMIN_USER = "admin"
SCRAM_ITERATIONS = 8192
TIMEOUT_S = 30.0
RESOURCE_TYPES = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP}
PASSWORD_LINE = re.compile(r"^export BUREAU_KAFKA_PASSWORD='([A-Za-z0-9_-]+)'$", re.M)


def node_admin(bootstrap: str, tls_dir: Path) -> AdminClient:
    return AdminClient(
        {
            "log_level": 4,  # librdkafka: warnings and worse
            "bootstrap.servers": bootstrap,
            "security.protocol": "SSL",
            "ssl.ca.location": str(tls_dir / "ca.crt"),
            "ssl.certificate.location": str(tls_dir / "node.crt"),
            "ssl.key.location": str(tls_dir / "node.key"),
        }
    )


def kept_password(path: Path) -> str:
    """The password already in `path` (a creds env file or a bare password file), else a new one."""
    if path.is_file():
        text = path.read_text()
        found = PASSWORD_LINE.search(text)
        if found:
            return found.group(1)
        if re.fullmatch(r"[A-Za-z0-9_-]{20,}\n?", text):
            return text.strip()
    return secrets.token_urlsafe(24)


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)


def creds_text(user: str, password: str, ca_file: Path) -> str:
    return (
        "# Written by deploy/local/stack.sh: this workload's Kafka principal (services.sh sources\n"
        "# it into the workload's own process only).\n"
        "export BUREAU_KAFKA_SECURITY_PROTOCOL='SASL_SSL'\n"
        "export BUREAU_KAFKA_SASL_MECHANISM='SCRAM-SHA-512'\n"
        f"export BUREAU_KAFKA_USERNAME='{user}'\n"
        f"export BUREAU_KAFKA_PASSWORD='{password}'\n"
        f"export BUREAU_KAFKA_CA_FILE='{ca_file}'\n"
    )


def wait_all(futures: dict[Any, Any], what: str) -> None:
    for key, future in futures.items():
        try:
            future.result(timeout=TIMEOUT_S)
        except KafkaException as exc:
            sys.exit(f"kafka access: {what} {key}: {exc}")


def upsert_users(admin: AdminClient, passwords: dict[str, str]) -> None:
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upserts = [
        UserScramCredentialUpsertion(user, info, password.encode())
        for user, password in passwords.items()
    ]
    wait_all(admin.alter_user_scram_credentials(upserts), "SCRAM credentials of")


def binding(grant: Grant, operation: str) -> AclBinding:
    return AclBinding(
        RESOURCE_TYPES[grant.resource_type],
        grant.name,
        ResourcePatternType.LITERAL,
        f"User:{grant.principal}",
        "*",
        AclOperation[operation],
        AclPermissionType.ALLOW,
    )


def wanted_acls(prefix: str) -> set[AclBinding]:
    return {binding(g, op) for g in all_grants(prefix) for op in g.operations}


def sync_acls(admin: AdminClient, prefix: str) -> tuple[int, int]:
    wanted = wanted_acls(prefix)
    present: set[AclBinding] = set()
    for workload in WORKLOADS:
        principal_filter = AclBindingFilter(
            ResourceType.ANY,
            None,
            ResourcePatternType.ANY,
            f"User:{workload}",
            None,
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        present.update(admin.describe_acls(principal_filter).result(timeout=TIMEOUT_S))
    missing, extra = wanted - present, present - wanted
    if missing:
        wait_all(admin.create_acls(sorted(missing)), "creating ACL")
    if extra:
        stale = [
            AclBindingFilter(
                b.restype,
                b.name,
                b.resource_pattern_type,
                b.principal,
                b.host,
                b.operation,
                b.permission_type,
            )
            for b in extra
        ]
        wait_all(admin.delete_acls(stale), "deleting ACL")
    return len(missing), len(extra)


def create_topics(admin: AdminClient, prefix: str) -> list[str]:
    existing = set(admin.list_topics(timeout=TIMEOUT_S).topics)
    new = [NewTopic(t, num_partitions=3, replication_factor=1) for t in topics(prefix)]
    new = [t for t in new if t.topic not in existing]
    if new:
        wait_all(admin.create_topics(new, operation_timeout=TIMEOUT_S), "creating topic")
    return [t.topic for t in new]


def check_admin_login(bootstrap: str, ca_file: Path, password: str) -> None:
    client = AdminClient(
        {
            "log_level": 4,  # librdkafka: warnings and worse
            "bootstrap.servers": bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": ADMIN_USER,
            "sasl.password": password,
            "ssl.ca.location": str(ca_file),
        }
    )
    try:
        client.list_topics(timeout=TIMEOUT_S)
    except KafkaException as exc:
        sys.exit(f"kafka access: {ADMIN_USER} cannot log in on {bootstrap} (SASL_SSL): {exc}")


def grant(prefix: str) -> None:
    env = os.environ
    missing = [n for n in ("BUREAU_KAFKA_BOOTSTRAP", "BUREAU_KAFKA_PASSWORD") if not env.get(n)]
    if missing:
        sys.exit(f"kafka access grant: {', '.join(missing)} not set (source .run/env.sh)")
    config: dict[str, str | int] = {
        "log_level": 4,
        "bootstrap.servers": env["BUREAU_KAFKA_BOOTSTRAP"],
        "security.protocol": env.get("BUREAU_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
        "sasl.mechanism": env.get("BUREAU_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
        "sasl.username": env.get("BUREAU_KAFKA_USERNAME", ADMIN_USER),
        "sasl.password": env["BUREAU_KAFKA_PASSWORD"],
    }
    if env.get("BUREAU_KAFKA_CA_FILE"):
        config["ssl.ca.location"] = env["BUREAU_KAFKA_CA_FILE"]
    admin = AdminClient(config)
    wait_all(admin.create_acls(sorted(wanted_acls(prefix))), "creating ACL")
    new_topics = create_topics(admin, prefix)
    sys.stdout.write(
        f"kafka access: the workloads' ACLs for prefix {prefix!r}, "
        f"topics created: {', '.join(new_topics) or 'none'}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    granting = commands.add_parser("grant", help="the workloads' ACLs for another prefix")
    granting.add_argument("--prefix", required=True)
    applying = commands.add_parser("apply", help="users, ACLs and topics, as the node")
    applying.add_argument("--node-bootstrap", required=True)
    applying.add_argument("--client-bootstrap", required=True)
    applying.add_argument("--tls-dir", required=True, type=Path)
    applying.add_argument("--creds-dir", required=True, type=Path)
    applying.add_argument("--admin-password-file", required=True, type=Path)
    applying.add_argument("--prefix", default="bureau")
    args = parser.parse_args()
    if args.command == "grant":
        grant(args.prefix)
        return
    ca_file = args.tls_dir.resolve() / "ca.crt"

    passwords = {ADMIN_USER: kept_password(args.admin_password_file)}
    for workload in WORKLOADS:
        passwords[workload] = kept_password(args.creds_dir / f"{workload}.kafka.env")
    admin = node_admin(args.node_bootstrap, args.tls_dir)
    upsert_users(admin, passwords)
    write_private(args.admin_password_file, passwords[ADMIN_USER] + "\n")
    for workload in WORKLOADS:
        text = creds_text(workload, passwords[workload], ca_file)
        write_private(args.creds_dir / f"{workload}.kafka.env", text)
    created, deleted = sync_acls(admin, args.prefix)
    new_topics = create_topics(admin, args.prefix)
    check_admin_login(args.client_bootstrap, ca_file, passwords[ADMIN_USER])
    sys.stdout.write(
        f"kafka access: {len(passwords)} SCRAM users, ACLs +{created} -{deleted}, "
        f"topics created: {', '.join(new_topics) or 'none'}\n"
    )


if __name__ == "__main__":
    main()
