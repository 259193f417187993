"""The local stack (deploy/local/stack.sh) does what docs/local-stack.md promises.

Needs the stack up (`deploy/local/stack.sh up`). The environment comes from the process, or, when
BUREAU_DATABASE_URL is not set there, from ${BUREAU_RUN_DIR:-<repo>/.run}/env.sh.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import cast

import asyncpg  # type: ignore[import-untyped]
import pkcs11
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.types import DecryptMixin, EncryptMixin

from shared.kafka_access import WORKLOADS
from shared.kafka_client import KafkaSecurity, client_options

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_PORTS = (55432, 19092, 19093, 19094)  # PostgreSQL, Kafka clients, controller, broker
ENV_KEYS = (
    "BUREAU_RUN_DIR",
    "BUREAU_DATABASE_URL",
    "BUREAU_KAFKA_BOOTSTRAP",
    "BUREAU_KAFKA_SECURITY_PROTOCOL",
    "BUREAU_KAFKA_USERNAME",
    "BUREAU_KAFKA_PASSWORD",
    "BUREAU_KAFKA_CA_FILE",
    "SOFTHSM2_CONF",
    "BUREAU_PKCS11_MODULE",
    "BUREAU_HSM_TOKEN",
    "BUREAU_HSM_PIN",
    "OPENSSL_CONF",
    "BUREAU_PCSC_READERS",
)


def _read_env_file(path: Path) -> dict[str, str]:
    """Parse the `export NAME=value` lines that stack.sh writes."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            values[name] = value
    return values


# Named apart from tests/conftest.py's `stack_env`: this module reads the stack's own contract.
@pytest.fixture(scope="session")
def stack_vars() -> Mapping[str, str]:
    # The stack's own env.sh wins over os.environ: other suites in the same pytest process
    # point SOFTHSM2_CONF at their fresh test tokens for the whole session.
    run_dir = Path(os.environ.get("BUREAU_RUN_DIR", REPO_ROOT / ".run"))
    env_file = run_dir / "env.sh"
    if env_file.is_file():
        env = _read_env_file(env_file)
    elif os.environ.get("BUREAU_DATABASE_URL"):
        env = {k: os.environ[k] for k in ENV_KEYS if k in os.environ}
    else:
        pytest.fail(f"{env_file} is missing: run deploy/local/stack.sh up first")
    missing = [k for k in ENV_KEYS if not env.get(k)]
    assert not missing, f"stack environment lacks {missing}"
    return env


def _asyncpg_dsn(url: str) -> str:
    """postgresql+asyncpg://... (SQLAlchemy) -> postgresql://... (asyncpg)."""
    scheme, sep, rest = url.partition("://")
    assert sep, url
    assert scheme.startswith("postgresql"), url
    return f"postgresql://{rest}"


# --- PostgreSQL ------------------------------------------------------------------------------


async def test_postgres_bureau_role_can_create_schema_and_role(
    stack_vars: Mapping[str, str],
) -> None:
    dsn = _asyncpg_dsn(stack_vars["BUREAU_DATABASE_URL"])
    assert "@127.0.0.1:55432/" in dsn
    suffix = uuid.uuid4().hex[:12]
    schema, role = f"stack_test_{suffix}", f"stack_test_role_{suffix}"
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        me = await conn.fetchrow(
            "SELECT current_user AS name, rolsuper, rolcreaterole, "
            "pg_catalog.pg_get_userbyid(d.datdba) AS db_owner "
            "FROM pg_catalog.pg_roles r, pg_catalog.pg_database d "
            "WHERE r.rolname = current_user AND d.datname = current_database()"
        )
        assert me is not None
        assert me["name"] == "bureau"
        assert me["rolcreaterole"] is True
        assert me["rolsuper"] is False, "the bureau role must not be a superuser"
        assert me["db_owner"] == "bureau"
        assert int(await conn.fetchval("SHOW server_version_num")) >= 150000
        assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"

        await conn.execute(f"CREATE SCHEMA {schema}")
        try:
            await conn.execute(f"CREATE TABLE {schema}.t (id int PRIMARY KEY, v text NOT NULL)")
            await conn.executemany(
                f"INSERT INTO {schema}.t VALUES ($1, $2)", [(1, "one"), (2, "two")]
            )
            assert await conn.fetchval(
                f"SELECT string_agg(v, ',' ORDER BY id) FROM {schema}.t"
            ) == ("one,two")
            # The audit service creates a restricted role of its own later on.
            await conn.execute(f"CREATE ROLE {role} NOLOGIN")
            await conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
            await conn.execute(f"GRANT SELECT ON {schema}.t TO {role}")
        finally:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await conn.execute(f"DROP ROLE IF EXISTS {role}")
    finally:
        await conn.close()


# --- Kafka -----------------------------------------------------------------------------------


def _kafka_as_admin(stack_vars: Mapping[str, str]) -> KafkaSecurity:
    """The stack's `admin` super user, as its env.sh gives it to tests and tools."""
    return KafkaSecurity(
        protocol=stack_vars["BUREAU_KAFKA_SECURITY_PROTOCOL"],
        mechanism=stack_vars.get("BUREAU_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
        username=stack_vars["BUREAU_KAFKA_USERNAME"],
        password=stack_vars["BUREAU_KAFKA_PASSWORD"],
        ca_file=stack_vars["BUREAU_KAFKA_CA_FILE"],
    )


async def test_kafka_refuses_a_client_without_credentials(stack_vars: Mapping[str, str]) -> None:
    """The shared stack's client listener is SASL_SSL only (tests/integration/
    test_kafka_security.py tries every refusal on a private broker made the same way)."""
    bootstrap = stack_vars["BUREAU_KAFKA_BOOTSTRAP"]
    admin = _kafka_as_admin(stack_vars)
    assert (admin.protocol, admin.mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    for anonymous in (KafkaSecurity(), KafkaSecurity("SSL", ca_file=admin.ca_file)):
        producer = AIOKafkaProducer(**client_options(bootstrap, anonymous), acks="all")
        try:
            with pytest.raises(KafkaConnectionError):
                await producer.start()
        finally:
            await producer.stop()
    # Each workload has its own credentials file, readable by its owner only.
    creds = Path(stack_vars["BUREAU_RUN_DIR"]) / "creds"
    for workload in WORKLOADS:
        path = creds / f"{workload}.kafka.env"
        assert f"BUREAU_KAFKA_USERNAME='{workload}'" in path.read_text(), workload
        assert path.stat().st_mode & 0o077 == 0, path


async def test_kafka_idempotent_produce_and_consume_round_trip(
    stack_vars: Mapping[str, str],
) -> None:
    bootstrap = stack_vars["BUREAU_KAFKA_BOOTSTRAP"]
    assert bootstrap == "127.0.0.1:19092"
    topic = f"stack-test-{uuid.uuid4().hex[:12]}"
    sent = {f"key-{i}".encode(): f"value-{i}".encode() * 10 for i in range(100)}

    producer = AIOKafkaProducer(
        **client_options(bootstrap, _kafka_as_admin(stack_vars)),
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
    )
    await producer.start()
    try:
        # The topic does not exist yet: auto.create.topics.enable makes it, with num.partitions=3.
        futures = [await producer.send(topic, value=v, key=k) for k, v in sent.items()]
        await producer.flush()
        offsets = [(await f).offset for f in futures]
        assert all(o >= 0 for o in offsets)
        assert len(await producer.partitions_for(topic)) == 3
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        **client_options(bootstrap, _kafka_as_admin(stack_vars)),
        group_id=f"{topic}-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    received: dict[bytes, bytes] = {}
    try:
        for _ in range(60):
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    assert record.key is not None
                    assert record.value is not None
                    received[record.key] = record.value
            if len(received) >= len(sent):
                break
        await consumer.commit()  # the group coordinator (__consumer_offsets) works too
    finally:
        await consumer.stop()
    assert received == sent

    admin = AIOKafkaAdminClient(**client_options(bootstrap, _kafka_as_admin(stack_vars)))
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


async def test_kafka_transactions_commit_and_abort(stack_vars: Mapping[str, str]) -> None:
    """Single-node transaction settings (transaction.state.log.*) let transactions complete."""
    bootstrap = stack_vars["BUREAU_KAFKA_BOOTSTRAP"]
    topic = f"stack-test-tx-{uuid.uuid4().hex[:12]}"
    producer = AIOKafkaProducer(
        **client_options(bootstrap, _kafka_as_admin(stack_vars)),
        transactional_id=f"{topic}-producer",
        acks="all",
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed")
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-2")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        **client_options(bootstrap, _kafka_as_admin(stack_vars)),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        for _ in range(40):
            batches = await consumer.getmany(timeout_ms=500)
            values += [r.value for records in batches.values() for r in records if r.value]
            if len(values) >= 2:
                break
    finally:
        await consumer.stop()
    assert sorted(values) == [b"committed", b"committed-2"]

    admin = AIOKafkaAdminClient(**client_options(bootstrap, _kafka_as_admin(stack_vars)))
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


# --- SoftHSM2 --------------------------------------------------------------------------------
# The HSM checks run in a child process (this file run as a script): SoftHSM reads SOFTHSM2_CONF
# at its one C_Initialize per process, and OpenSSL reads OPENSSL_CONF when it first loads, so a
# fresh process sees exactly the stack's environment and leaves this one's untouched.


def _hsm_session() -> pkcs11.Session:
    lib = pkcs11.lib(os.environ["BUREAU_PKCS11_MODULE"])
    token = lib.get_token(token_label=os.environ["BUREAU_HSM_TOKEN"])
    return token.open(user_pin=os.environ["BUREAU_HSM_PIN"])


def _check_hsm_aes() -> str:
    """Open the token with the PIN, make a sensitive, non-extractable AES key, use it."""
    with _hsm_session() as session:
        key = session.generate_key(
            KeyType.AES,
            256,
            label=f"stack-test-{uuid.uuid4().hex[:8]}",
            store=False,  # a session object: nothing is left in the token
            template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
        )
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.NEVER_EXTRACTABLE] is True
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            _ = key[Attribute.VALUE]
        cipher = cast(EncryptMixin, key)
        decipher = cast(DecryptMixin, key)
        iv = session.generate_random(128)
        data = b"cardbureau local stack check"
        ciphertext = cipher.encrypt(data, mechanism=Mechanism.AES_CBC_PAD, mechanism_param=iv)
        assert ciphertext != data
        assert decipher.decrypt(
            ciphertext, mechanism=Mechanism.AES_CBC_PAD, mechanism_param=iv
        ) == (data)
    return "ok"


def _check_hsm_des() -> str:
    """Single DES (ISO 9797-1 retail MAC) works in SoftHSM only with OpenSSL's legacy provider.

    FIPS 81 known answer: DES-ECB(0123456789ABCDEF, "Now is t") = 3FA40E8A984D4815. Without
    OPENSSL_CONF enabling the legacy provider, SoftHSM answers CKR_MECHANISM_INVALID.
    python-pkcs11 names single DES with a leading underscore (KeyType._DES, Mechanism._DES_ECB).
    """
    with _hsm_session() as session:
        key = session.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType._DES,
                Attribute.VALUE: bytes.fromhex("0123456789ABCDEF"),
                Attribute.TOKEN: False,
                Attribute.ENCRYPT: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
            }
        )
        cipher = cast(EncryptMixin, key)
        block = cipher.encrypt(b"Now is t", mechanism=Mechanism._DES_ECB)
        assert isinstance(block, bytes)
        return block.hex()


_CHECKS: dict[str, Callable[[], str]] = {"hsm-aes": _check_hsm_aes, "hsm-des": _check_hsm_des}


def _run_check(name: str, stack_vars: Mapping[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, __file__, name],
        env={**os.environ, **stack_vars},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"check {name} failed:\n{done.stderr}"
    return done.stdout.strip()


def test_softhsm_token_generates_sensitive_non_extractable_aes_key(
    stack_vars: Mapping[str, str],
) -> None:
    assert Path(stack_vars["SOFTHSM2_CONF"]).is_file()
    assert _run_check("hsm-aes", stack_vars) == "ok"


def test_softhsm_single_des_with_openssl_legacy_provider(stack_vars: Mapping[str, str]) -> None:
    assert Path(stack_vars["OPENSSL_CONF"]).is_file()
    assert _run_check("hsm-des", stack_vars) == "3fa40e8a984d4815"


# --- Network exposure ------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").split("%", 1)[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # "*" and the like: every address
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def test_stack_ports_listen_on_loopback_only() -> None:
    ss = shutil.which("ss")
    assert ss, "ss (iproute2) is needed for this check"
    listing = subprocess.run(
        [ss, "-H", "-l", "-t", "-n"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    listeners: dict[int, list[str]] = {port: [] for port in STACK_PORTS}
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        host, _, port_text = fields[3].rpartition(":")
        if port_text.isdigit() and int(port_text) in listeners:
            listeners[int(port_text)].append(host)
    for port, hosts in listeners.items():
        assert hosts, f"nothing listens on port {port}: is the stack up?"
        exposed = [h for h in hosts if not _is_loopback(h)]
        assert not exposed, f"port {port} listens beyond loopback on {exposed}"


if __name__ == "__main__":  # the child process of _run_check
    sys.stdout.write(_CHECKS[sys.argv[1]]() + "\n")
