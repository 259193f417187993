"""Kafka's trust boundary on a real broker (issue 15): SASL/SCRAM over TLS, one principal per
workload, and the ACLs of shared/kafka_access.py, as deploy/local/stack.sh sets them up. The
broker is a private one made by stack.sh itself (tests/support/kafka_private.py), so these
hold whatever the shared stack runs. Each attack is tried and seen to fail."""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.bus import ensure_topics, make_producer
from shared.kafka_access import SUBSCRIPTIONS, WORKLOADS
from shared.kafka_client import KafkaSecurity, client_options
from shared.settings import BureauSettings
from tests.support.bus import effect_count, harness_runtime, prepared_event, wait_for
from tests.support.kafka_private import REPO, PrivateKafka, private_kafka

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def kafka() -> Iterator[PrivateKafka]:
    with private_kafka() as broker:
        yield broker


def other_ca(tmp_path: Path) -> str:
    """A CA that signed nothing of the broker's: a man in the middle's, say."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not the bureau's CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "other-ca.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


async def end_offsets(kafka: PrivateKafka, topic: str) -> dict[int, int]:
    """Each partition's end offset, read as admin (so a refused write shows as no change)."""
    admin = AIOKafkaAdminClient(**client_options(kafka.bootstrap, kafka.admin))
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    assert partitions, described
    consumer = AIOKafkaConsumer(**client_options(kafka.bootstrap, kafka.admin), group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def produce(kafka: PrivateKafka, security: KafkaSecurity, topic: str) -> int:
    producer = make_producer(kafka.bootstrap, "security-test", security)
    await producer.start()
    try:
        return int((await producer.send_and_wait(topic, b"{}", key=b"k")).offset)
    finally:
        await producer.stop()


async def refused_start(kafka: PrivateKafka, security: KafkaSecurity) -> None:
    """A producer with these settings cannot even start: it gets no metadata from the broker."""
    producer = AIOKafkaProducer(**client_options(kafka.bootstrap, security), acks="all")
    try:
        with pytest.raises(KafkaConnectionError):
            await producer.start()
    finally:
        await producer.stop()


async def read_once(kafka: PrivateKafka, security: KafkaSecurity, group: str, *topics: str) -> int:
    consumer = AIOKafkaConsumer(
        *topics,
        **client_options(kafka.bootstrap, security),
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        seen = 0
        for _ in range(6):  # the group's first join takes a few polls
            batch = await consumer.getmany(timeout_ms=1000)
            seen += sum(len(records) for records in batch.values())
            if seen:
                break
        if consumer.assignment():
            await consumer.commit()
        return seen
    finally:
        await consumer.stop()


async def test_a_producer_without_credentials_cannot_write(kafka: PrivateKafka) -> None:
    before = await end_offsets(kafka, "bureau.fulfillment")
    await refused_start(kafka, KafkaSecurity())  # plaintext on the TLS port
    await refused_start(kafka, KafkaSecurity("SSL", ca_file=kafka.ca_file))  # TLS, no SASL
    assert await end_offsets(kafka, "bureau.fulfillment") == before


async def test_a_wrong_password_is_refused(
    kafka: PrivateKafka, caplog: pytest.LogCaptureFixture
) -> None:
    real = kafka.as_("fulfillment")
    wrong = KafkaSecurity(
        real.protocol, real.mechanism, real.username, "not-the-password", real.ca_file
    )
    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        await refused_start(kafka, wrong)
    assert "SaslAuthenticationFailed" in caplog.text
    # Another workload's password does not open this one either.
    borrowed = replace(real, password=kafka.as_("qa").password)
    await refused_start(kafka, borrowed)


async def test_tls_with_a_wrong_ca_is_refused(
    kafka: PrivateKafka, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    real = kafka.as_("qa")
    stranger = replace(real, ca_file=other_ca(tmp_path))
    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        await refused_start(kafka, stranger)
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


async def test_a_service_cannot_write_another_services_topic(kafka: PrivateKafka) -> None:
    # The review's forgery: a station's principal publishing on audit's or fulfillment's topic.
    for workload, victim in [("electrical", "audit"), ("qa", "fulfillment"), ("intake", "keymgmt")]:
        before = await end_offsets(kafka, f"bureau.{victim}")
        with pytest.raises(TopicAuthorizationFailedError):
            await produce(kafka, kafka.as_(workload), f"bureau.{victim}")
        assert await end_offsets(kafka, f"bureau.{victim}") == before, (workload, victim)
    # Nor make a topic of its own choosing (auto-creation needs CREATE on it).
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(kafka, kafka.as_("qa"), "bureau.forged")
    with pytest.raises(TopicAuthorizationFailedError):
        await ensure_topics(kafka.bootstrap, ["bureau.forged"], security=kafka.as_("qa"))


async def test_a_service_cannot_read_what_it_does_not_subscribe_to(kafka: PrivateKafka) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        await read_once(kafka, kafka.as_("graphical"), "bureau.graphical", "bureau.intake")
    with pytest.raises(TopicAuthorizationFailedError):  # only audit reads the dead letters
        await read_once(kafka, kafka.as_("fulfillment"), "bureau.fulfillment", "bureau.dlq")
    # A topic it may read, but in another service's consumer group (its offsets): refused.
    with pytest.raises(GroupAuthorizationFailedError):
        await read_once(kafka, kafka.as_("qa"), "bureau.graphical", "bureau.graphical")


async def test_each_workload_writes_its_own_topic_and_reads_its_subscriptions(
    kafka: PrivateKafka,
) -> None:
    for workload in WORKLOADS:
        security = kafka.as_(workload)
        own = [f"bureau.{workload}", "bureau.dlq"]
        follows = [f"bureau.{s}" for s in SUBSCRIPTIONS[workload]]
        await ensure_topics(kafka.bootstrap, [*follows, *own], security=security)  # as on start
        for topic in own:
            await produce(kafka, security, topic)
    for workload in WORKLOADS:  # every topic now holds a record: each subscriber sees some
        follows = [f"bureau.{s}" for s in SUBSCRIPTIONS[workload]]
        seen = await read_once(kafka, kafka.as_(workload), f"bureau.{workload}", *follows)
        assert seen > 0, workload
    assert await read_once(kafka, kafka.as_("audit"), "bureau.audit", "bureau.dlq") > 0


def settings_as(kafka: PrivateKafka, workload: str) -> BureauSettings:
    security = kafka.as_(workload)
    return BureauSettings(
        environment="test",
        topic_prefix="bureau",
        kafka_bootstrap=kafka.bootstrap,
        kafka_security_protocol=security.protocol,
        kafka_sasl_mechanism=security.mechanism,
        kafka_username=security.username,
        kafka_password=security.password,
        kafka_ca_file=security.ca_file,
    )


async def test_the_bus_runs_end_to_end_under_least_privilege_principals(
    kafka: PrivateKafka, stack_env: dict[str, str], unique: str
) -> None:
    """The real wiring (ensure_topics, the outbox relay's producer, the event consumer and its
    group) as keymgmt -> electrical, each with only its own principal's rights."""
    source = harness_runtime(settings_as(kafka, "keymgmt"), f"ksec_src_{unique}")
    source.name = "keymgmt"  # emits on bureau.keymgmt, subscribes to nothing
    source.subscribe = []
    sink = harness_runtime(settings_as(kafka, "electrical"), f"ksec_sink_{unique}")
    sink.consumer_group = "bureau.electrical"  # its own group, the only one it may use
    before = await end_offsets(kafka, "bureau.electrical")
    await source.start()
    await sink.start()
    try:
        assert sink.consumer is not None
        async with asyncio.timeout(60):
            await sink.consumer.ready.wait()
        event = prepared_event()
        async with source.unit_of_work() as uow:
            await uow.emit(event)

        async def applied() -> bool:
            return await effect_count(sink, event.card_id) == 1

        await wait_for(applied, timeout=60)
        # ...and its follow-up event went out on electrical's own topic, by its relay.
        async with asyncio.timeout(30):
            while sum((await end_offsets(kafka, "bureau.electrical")).values()) <= sum(
                before.values()
            ):
                await asyncio.sleep(0.3)
    finally:
        await sink.stop()
        await source.stop()


async def test_a_run_on_another_prefix_gets_the_same_acls_for_it(
    kafka: PrivateKafka, unique: str
) -> None:
    """services.sh's `access.py grant` (an e2e run's or a benchmark's prefix), as admin."""
    prefix = f"g{unique}"
    admin = kafka.admin
    env = {
        **os.environ,
        "BUREAU_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "BUREAU_KAFKA_SECURITY_PROTOCOL": admin.protocol,
        "BUREAU_KAFKA_SASL_MECHANISM": admin.mechanism,
        "BUREAU_KAFKA_USERNAME": str(admin.username),
        "BUREAU_KAFKA_PASSWORD": str(admin.password),
        "BUREAU_KAFKA_CA_FILE": kafka.ca_file,
    }
    script = REPO / "deploy" / "local" / "kafka" / "access.py"
    granted = subprocess.run(  # noqa: ASYNC221 - a short admin tool, once
        [sys.executable, str(script), "grant", "--prefix", prefix],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert granted.returncode == 0, granted.stderr
    assert await produce(kafka, kafka.as_("graphical"), f"{prefix}.graphical") >= 0
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(kafka, kafka.as_("graphical"), f"{prefix}.qa")
    # A workload's password does not grant: only the admin may.
    env["BUREAU_KAFKA_USERNAME"] = "graphical"
    env["BUREAU_KAFKA_PASSWORD"] = str(kafka.as_("graphical").password)
    refused = subprocess.run(  # noqa: ASYNC221
        [sys.executable, str(script), "grant", "--prefix", f"h{unique}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0
    assert "creating ACL" in refused.stderr + refused.stdout
