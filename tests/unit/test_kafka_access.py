"""The one declaration of who may do what on Kafka (shared/kafka_access.py), the Strimzi
KafkaUsers generated from it, and the Kafka security settings every client is built from."""

from __future__ import annotations

import os
import secrets
import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.audit import app as audit_app
from services.electrical import app as electrical_app
from services.fulfillment import app as fulfillment_app
from services.graphical import app as graphical_app
from services.intake import app as intake_app
from services.keymgmt import app as keymgmt_app
from services.qa import app as qa_app
from shared.kafka_access import SUBSCRIPTIONS, WORKLOADS, grants_for, strimzi_users, subscriptions
from shared.kafka_client import KafkaSecurity, client_options
from shared.settings import BureauSettings

REPO = Path(__file__).resolve().parents[2]
USERS_YAML = REPO / "deploy" / "k8s" / "base" / "kafka" / "users.yaml"


def test_the_strimzi_users_are_generated_from_the_declaration() -> None:
    assert USERS_YAML.read_text() == strimzi_users(), (
        "deploy/k8s/base/kafka/users.yaml is stale: "
        "python -m shared.kafka_access k8s > deploy/k8s/base/kafka/users.yaml"
    )


def test_every_service_subscribes_to_what_it_is_granted() -> None:
    apps = {
        "intake": intake_app,
        "keymgmt": keymgmt_app,
        "electrical": electrical_app,
        "graphical": graphical_app,
        "qa": qa_app,
        "fulfillment": fulfillment_app,
        "audit": audit_app,
    }
    assert set(apps) == set(WORKLOADS)
    for name, app in apps.items():
        assert tuple(app.SUBSCRIBE) == SUBSCRIPTIONS[name], name


@pytest.mark.parametrize("workload", WORKLOADS)
def test_a_workload_writes_only_its_own_topic_and_the_dead_letters(workload: str) -> None:
    grants = grants_for(workload, "p")
    assert {g.principal for g in grants} == {workload}
    written = {g.name for g in grants if "WRITE" in g.operations or "CREATE" in g.operations}
    assert written == {f"p.{workload}", "p.dlq"}
    read = {g.name for g in grants if g.resource_type == "topic" and "READ" in g.operations}
    expected = {f"p.{s}" for s in subscriptions(workload)}
    assert read == (expected | {"p.dlq"} if workload == "audit" else expected)
    groups = {(g.name, g.operations) for g in grants if g.resource_type == "group"}
    assert groups == {(f"p.{workload}", ("READ",))}
    with pytest.raises(KeyError, match="no Kafka workload"):
        grants_for("witness")


def prod(**kafka: str) -> BureauSettings:
    """Production settings whose other secrets pass the guard: only Kafka's are on trial."""
    names = ("intake", "electrical", "graphical", "qa", "fulfillment", "audit")
    return BureauSettings(
        environment="prod",
        database_url=f"postgresql+asyncpg://u:{secrets.token_urlsafe(24)}@db/bureau",
        service_tokens=",".join(f"{n}={secrets.token_urlsafe(32)}" for n in names),
        principals=f"admin:root={secrets.token_urlsafe(32)}",
        migrate_on_start=False,
        **kafka,  # type: ignore[arg-type]
    )


def test_prod_refuses_kafka_in_clear_or_without_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):  # the stack's env.sh exports the admin principal
        if name.startswith("BUREAU_KAFKA_"):
            monkeypatch.delenv(name)
    with pytest.raises(ValidationError, match="must be SASL_SSL in prod"):
        prod(kafka_security_protocol="PLAINTEXT")
    with pytest.raises(ValidationError, match="must be SASL_SSL in prod"):
        prod(kafka_security_protocol="SSL")
    with pytest.raises(ValidationError, match="needs kafka_username and kafka_password"):
        prod(kafka_security_protocol="SASL_SSL")
    ok = prod(
        kafka_security_protocol="SASL_SSL",
        kafka_username="qa",
        kafka_password=secrets.token_urlsafe(32),
    )
    assert KafkaSecurity.of(ok).protocol == "SASL_SSL"
    with pytest.raises(ValidationError, match="needs kafka_password"):
        BureauSettings(kafka_security_protocol="SASL_SSL", kafka_username="qa")
    with pytest.raises(ValidationError, match="kafka_security_protocol 'TLS' is none of"):
        BureauSettings(kafka_security_protocol="TLS")
    with pytest.raises(ValidationError, match="kafka_sasl_mechanism 'PLAIN' is none of"):
        BureauSettings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="PLAIN",
            kafka_username="qa",
            kafka_password="pw",
        )
    with pytest.raises(ValidationError, match="BUREAU_KAFKA_PASSWORD is a development value"):
        prod(kafka_security_protocol="SASL_SSL", kafka_username="qa", kafka_password="qa-dev-pw")


def test_client_options_carry_scram_over_verified_tls(tmp_path: Path) -> None:
    settings = BureauSettings(
        kafka_security_protocol="SASL_SSL",
        kafka_username="qa",
        kafka_password="s3cret-pw",
        kafka_ca_file=None,
    )
    security = KafkaSecurity.of(settings)
    assert "s3cret-pw" not in repr(security)
    options = client_options("127.0.0.1:19092", security)
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert options == {
        "bootstrap_servers": "127.0.0.1:19092",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "qa",
        "sasl_plain_password": "s3cret-pw",
    }
    assert client_options("h:1", KafkaSecurity()) == {
        "bootstrap_servers": "h:1",
        "security_protocol": "PLAINTEXT",
    }


def test_a_helper_without_settings_connects_as_the_process_environment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BUREAU_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("BUREAU_KAFKA_USERNAME", "admin")
    monkeypatch.setenv("BUREAU_KAFKA_PASSWORD", "from-env")
    options = client_options("h:1")
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("admin", "from-env")
    # In a pod's init container (wait_for_topics) only the Kafka variables are set, in prod.
    monkeypatch.setenv("BUREAU_ENVIRONMENT", "prod")
    monkeypatch.setenv("BUREAU_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    assert client_options("h:1")["sasl_plain_password"] == "from-env"
