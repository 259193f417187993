"""deploy/k8s: Kafka speaks TLS + SCRAM-SHA-512 on every listener with simple authorization, and
each workload's pod connects as its own KafkaUser (issue 15). Rendered by kustomize, no cluster."""

from __future__ import annotations

from typing import Any

import pytest

from shared.kafka_access import WORKLOADS
from tests.support.k8s import OVERLAYS, Obj, bureau_deployments, of_kind, render

CA_SECRET = "bureau-kafka-cluster-ca-cert"
CA_DIR = "/etc/bureau/kafka-ca"


@pytest.fixture(params=OVERLAYS)
def objects(request: pytest.FixtureRequest) -> tuple[Obj, ...]:
    return render(request.param)


def test_every_listener_is_tls_with_scram_and_acls_are_enforced(objects: tuple[Obj, ...]) -> None:
    (kafka,) = of_kind(objects, "Kafka")
    spec = kafka["spec"]["kafka"]
    assert spec["authorization"] == {"type": "simple"}
    for listener in spec["listeners"]:
        assert listener["tls"] is True, listener["name"]
        assert listener["authentication"] == {"type": "scram-sha-512"}, listener["name"]
    users = {u["metadata"]["name"] for u in of_kind(objects, "KafkaUser")}
    assert users == set(WORKLOADS)
    (config,) = [
        c
        for c in of_kind(objects, "ConfigMap")
        if c["metadata"]["name"].startswith("bureau-config")
    ]
    data = config["data"]
    assert data["BUREAU_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert data["BUREAU_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert data["BUREAU_KAFKA_CA_FILE"] == f"{CA_DIR}/ca.crt"
    assert data["BUREAU_KAFKA_BOOTSTRAP"].endswith(":9093")


def kafka_identity(container: Obj) -> tuple[Any, Any]:
    env = {var["name"]: var for var in container.get("env", [])}
    user = env["BUREAU_KAFKA_USERNAME"]["value"]
    ref = env["BUREAU_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"]
    return user, (ref["name"], ref["key"])


def test_each_pod_connects_as_its_own_kafka_user(objects: tuple[Obj, ...]) -> None:
    deployments = [d for d in bureau_deployments(objects) if d["metadata"]["name"] in WORKLOADS]
    assert deployments
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == "kafka-ca"]
        assert volume["secret"]["secretName"] == CA_SECRET, name
        kafka_containers = [c for c in pod["containers"] if c["name"] == name] + [
            c for c in pod["initContainers"] if c["name"] == "wait-for-topics"
        ]
        assert len(kafka_containers) == 2, name
        for container in kafka_containers:
            # Its own user and the password of that user's Secret, never another's.
            assert kafka_identity(container) == (name, (name, "password")), name
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            assert mounts["kafka-ca"] == CA_DIR, name
