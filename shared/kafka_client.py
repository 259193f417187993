"""How every aiokafka client of the bureau connects: the bootstrap servers and the security
settings (SASL/SCRAM over TLS on the local stack and in Kubernetes), built in ONE place.

Every AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient the code makes takes its
connection keywords from `client_options`. A service passes its own settings' security; a
helper that knows only a bootstrap string gets the process's (BUREAU_KAFKA_* environment).
"""

from __future__ import annotations

import functools
import os
import ssl
from dataclasses import dataclass, field
from typing import Any

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
