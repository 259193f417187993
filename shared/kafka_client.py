"""How every aiokafka client of the bureau connects: the bootstrap servers and the security
settings (SASL/SCRAM over TLS on the local stack and in Kubernetes), built in ONE place.

Every AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient the code makes takes its
connection keywords from `client_options`; the bus's producer (`make_producer`) and the topics
a service needs (`ensure_topics`) are made here too. A service passes its own settings' security; a
helper that knows only a bootstrap string gets the process's (BUREAU_KAFKA_* environment).
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from aiokafka.helpers import create_ssl_context

from shared.settings import BureauSettings

TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True)
class KafkaSecurity:
    """One principal's way onto the cluster. The password never appears in a repr."""

    protocol: str = "PLAINTEXT"
    mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None

    @classmethod
    def of(cls, settings: BureauSettings) -> KafkaSecurity:
        return cls(
            protocol=settings.kafka_security_protocol,
            mechanism=settings.kafka_sasl_mechanism,
            username=settings.kafka_username,
            password=settings.kafka_password,
            ca_file=settings.kafka_ca_file,
        )

    @classmethod
    def from_env(cls) -> KafkaSecurity:
        """The BUREAU_KAFKA_* variables alone: a helper (wait_for_topics in a pod's init
        container) has no other setting, so the whole BureauSettings would not validate."""
        env = os.environ
        return cls(
            protocol=env.get("BUREAU_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
            mechanism=env.get("BUREAU_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            username=env.get("BUREAU_KAFKA_USERNAME") or None,
            password=env.get("BUREAU_KAFKA_PASSWORD") or None,
            ca_file=env.get("BUREAU_KAFKA_CA_FILE") or None,
        )


@functools.lru_cache(maxsize=8)
def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Server certificates checked against `ca_file` (the system's CAs when None), host names
    checked, TLS 1.2 at least (aiokafka's create_ssl_context defaults)."""
    context: ssl.SSLContext = create_ssl_context(cafile=ca_file)
    return context


def client_options(bootstrap: str, security: KafkaSecurity | None = None) -> dict[str, Any]:
    """The keywords every aiokafka client gets: bootstrap_servers and the security settings."""
    sec = security if security is not None else KafkaSecurity.from_env()
    options: dict[str, Any] = {"bootstrap_servers": bootstrap, "security_protocol": sec.protocol}
    if sec.protocol in TLS_PROTOCOLS:
        options["ssl_context"] = tls_context(sec.ca_file)
    if sec.protocol in SASL_PROTOCOLS:
        options["sasl_mechanism"] = sec.mechanism
        options["sasl_plain_username"] = sec.username
        options["sasl_plain_password"] = sec.password
    return options


def make_producer(
    bootstrap: str, client_id: str, security: KafkaSecurity | None = None
) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **client_options(bootstrap, security),
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
        request_timeout_ms=30000,
    )


async def ensure_topics(
    bootstrap: str,
    topics: Sequence[str],
    partitions: int = 3,
    security: KafkaSecurity | None = None,
) -> None:
    """Create the topics a service reads and writes before it subscribes, so a consumer never
    waits a metadata refresh for a topic that appears later. In production the KafkaTopic
    resources create them first and this finds them present."""
    admin = AIOKafkaAdminClient(**client_options(bootstrap, security))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if missing:
            response = await admin.create_topics(
                [NewTopic(name=t, num_partitions=partitions, replication_factor=1) for t in missing]
            )
            # Per topic an error code, never raised by aiokafka: a refusal (no CREATE right,
            # say) must stop the service here, not leave it waiting for a topic that never comes.
            # A creation still under way when the request timed out (7) completes on its own.
            for topic, code, *_message in response.topic_errors:
                if code not in (0, 7, TopicAlreadyExistsError.errno):  # 36: another was first
                    raise for_code(code)(f"creating topic {topic}")
    finally:
        await admin.close()
