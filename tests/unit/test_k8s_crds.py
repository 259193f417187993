"""The Strimzi and CloudNativePG objects of every overlay, against their basic shape.

kubernetes-validate bundles only the built-in kinds, so the custom resources are checked here
with JSON schemas of the fields the bureau relies on (types, required fields, and the known
top-level spec fields, so that a misspelt one fails), plus the replication rules that make
acks=all mean something.
"""

from __future__ import annotations

from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from services.audit import app as audit_app
from services.electrical import app as electrical_app
from services.fulfillment import app as fulfillment_app
from services.graphical import app as graphical_app
from services.intake import app as intake_app
from services.keymgmt import app as keymgmt_app
from services.qa import app as qa_app
from tests.support.k8s import OVERLAYS, Obj, of_kind, render

STRIMZI = "kafka.strimzi.io/v1beta2"
CNPG = "postgresql.cnpg.io/v1"
pytestmark = pytest.mark.timeout(900)  # see test_k8s_manifests.py
SERVICE_STREAMS = ["intake", "keymgmt", "electrical", "graphical", "qa", "fulfillment", "audit"]


def _object(api_version: str, kind: str, spec: dict[str, Any], labels: bool = True) -> Obj:
    metadata: dict[str, Any] = {
        "type": "object",
        "required": ["name", "namespace"],
        "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}},
    }
    if labels:  # Strimzi finds a resource's cluster by this label
        metadata["required"].append("labels")
        metadata["properties"]["labels"] = {
            "type": "object",
            "required": ["strimzi.io/cluster"],
            "properties": {"strimzi.io/cluster": {"const": "bureau-kafka"}},
        }
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": metadata,
            "spec": {**spec, "type": "object"},
        },
    }


INT = {"type": "integer", "minimum": 1}
RESOURCES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"requests": {"type": "object"}, "limits": {"type": "object"}},
}
LISTENER = {
    "type": "object",
    "required": ["name", "port", "type", "tls"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]{1,11}$"},
        "port": {"type": "integer", "minimum": 9092},
        "type": {
            "enum": ["internal", "route", "loadbalancer", "nodeport", "ingress", "cluster-ip"]
        },
        "tls": {"type": "boolean"},
        "authentication": {
            "type": "object",
            "properties": {"type": {"enum": ["tls", "scram-sha-512", "oauth", "custom"]}},
        },
        "configuration": {"type": "object"},
        "networkPolicyPeers": {"type": "array", "minItems": 1},
    },
}
# CloudNativePG's RoleConfiguration (spec.managed.roles[]): the fields the bureau sets.
ROLE: dict[str, Any] = {
    "type": "object",
    "required": ["name", "ensure", "login", "passwordSecret"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z_][a-z0-9_]*$"},
        "ensure": {"enum": ["present", "absent"]},
        **{
            flag: {"type": "boolean"}
            for flag in (
                "login",
                "superuser",
                "createdb",
                "createrole",
                "replication",
                "bypassrls",
                "inherit",
            )
        },
        "passwordSecret": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {"name": {"type": "string"}},
        },
    },
}


SCHEMAS: dict[str, Obj] = {
    "Kafka": _object(
        STRIMZI,
        "Kafka",
        {
            "required": ["kafka", "entityOperator"],
            "additionalProperties": False,
            "properties": {
                "kafka": {
                    "type": "object",
                    "required": ["listeners", "config"],
                    "additionalProperties": False,
                    "properties": {
                        "version": {"type": "string"},
                        "listeners": {"type": "array", "minItems": 1, "items": LISTENER},
                        "config": {"type": "object"},
                        "authorization": {"type": "object"},
                        "template": {"type": "object"},
                        "resources": RESOURCES,
                    },
                },
                "entityOperator": {
                    "type": "object",
                    "required": ["topicOperator", "userOperator"],
                    "additionalProperties": False,
                    "properties": {
                        "topicOperator": {"type": "object"},
                        "userOperator": {"type": "object"},
                    },
                },
            },
        },
        labels=False,
    ),
    "KafkaNodePool": _object(
        STRIMZI,
        "KafkaNodePool",
        {
            "required": ["replicas", "roles", "storage"],
            "additionalProperties": False,
            "properties": {
                "replicas": INT,
                "roles": {"type": "array", "items": {"enum": ["controller", "broker"]}},
                "storage": {
                    "type": "object",
                    "required": ["type", "volumes"],
                    "properties": {"type": {"const": "jbod"}, "volumes": {"type": "array"}},
                },
                "resources": RESOURCES,
                "jvmOptions": {"type": "object"},
                "template": {"type": "object"},
            },
        },
    ),
    "KafkaTopic": _object(
        STRIMZI,
        "KafkaTopic",
        {
            "required": ["topicName", "partitions", "replicas", "config"],
            "additionalProperties": False,
            "properties": {
                "topicName": {"type": "string"},
                "partitions": INT,
                "replicas": INT,
                "config": {
                    "type": "object",
                    "required": ["retention.ms", "min.insync.replicas"],
                    "properties": {
                        "retention.ms": {"type": "integer", "minimum": 3_600_000},
                        "min.insync.replicas": INT,
                        "cleanup.policy": {"enum": ["delete", "compact"]},
                    },
                },
            },
        },
    ),
    "KafkaUser": _object(
        STRIMZI,
        "KafkaUser",
        {
            "required": ["authentication"],
            "additionalProperties": False,
            "properties": {
                "authentication": {
                    "type": "object",
                    "required": ["type"],
                    "properties": {"type": {"enum": ["tls", "tls-external", "scram-sha-512"]}},
                },
                "authorization": {
                    "type": "object",
                    "required": ["type", "acls"],
                    "properties": {
                        "type": {"const": "simple"},
                        "acls": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["resource", "operations"],
                                "properties": {
                                    "resource": {
                                        "type": "object",
                                        "required": ["type"],
                                        "properties": {
                                            "type": {
                                                "enum": [
                                                    "topic",
                                                    "group",
                                                    "cluster",
                                                    "transactionalId",
                                                ]
                                            }
                                        },
                                    },
                                    "operations": {"type": "array", "minItems": 1},
                                },
                            },
                        },
                    },
                },
            },
        },
    ),
    "Cluster": _object(
        CNPG,
        "Cluster",
        {
            "required": ["instances", "storage", "bootstrap"],
            "additionalProperties": False,
            "properties": {
                "instances": INT,
                "primaryUpdateStrategy": {"enum": ["unsupervised", "supervised"]},
                "minSyncReplicas": {"type": "integer", "minimum": 0},
                "maxSyncReplicas": {"type": "integer", "minimum": 0},
                "storage": {"type": "object", "required": ["size"]},
                "walStorage": {"type": "object", "required": ["size"]},
                "bootstrap": {
                    "type": "object",
                    "required": ["initdb"],
                    "properties": {
                        "initdb": {"type": "object", "required": ["database", "owner"]},
                    },
                },
                "postgresql": {"type": "object"},
                "resources": RESOURCES,
                "affinity": {"type": "object"},
                "monitoring": {"type": "object"},
                "backup": {"type": "object"},
                "managed": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"roles": {"type": "array", "items": ROLE}},
                },
            },
        },
        labels=False,
    ),
}


@pytest.fixture(params=OVERLAYS)
def objects(request: pytest.FixtureRequest) -> tuple[Obj, ...]:
    return render(request.param)


def test_custom_resources_have_their_shape(objects: tuple[Obj, ...]) -> None:
    custom = [o for o in objects if o["apiVersion"] in (STRIMZI, CNPG)]
    assert len(custom) == 1 + 1 + 8 + 7 + 1
    for obj in custom:
        jsonschema.validate(obj, SCHEMAS[obj["kind"]])


def test_every_stream_has_a_topic_that_keeps_acks_all_meaningful(objects: tuple[Obj, ...]) -> None:
    topics = {t["spec"]["topicName"]: t["spec"] for t in of_kind(objects, "KafkaTopic")}
    assert set(topics) == {f"bureau.{s}" for s in [*SERVICE_STREAMS, "dlq"]}
    (pool,) = of_kind(objects, "KafkaNodePool")
    brokers = pool["spec"]["replicas"]
    for name, spec in topics.items():
        min_isr = spec["config"]["min.insync.replicas"]
        assert spec["replicas"] <= brokers, name
        # One broker may be down (a rolling update) and writes still succeed...
        assert min_isr <= max(spec["replicas"] - 1, 1), name
        # ...and with more than one replica, an acknowledged write is on two brokers.
        if spec["replicas"] > 1:
            assert min_isr >= 2, name


def test_each_service_may_write_only_its_own_stream(objects: tuple[Obj, ...]) -> None:
    users = {u["metadata"]["name"]: u["spec"] for u in of_kind(objects, "KafkaUser")}
    assert set(users) == set(SERVICE_STREAMS)
    for name, spec in users.items():
        writable = {
            acl["resource"]["name"]
            for acl in spec["authorization"]["acls"]
            if "Write" in acl["operations"]
        }
        assert writable == {f"bureau.{name}", "bureau.dlq"}, name


# What each service's runtime subscribes to, taken from the services themselves.
SUBSCRIPTIONS = {
    "intake": set(intake_app.SUBSCRIBE),
    "keymgmt": set(keymgmt_app.SUBSCRIBE),
    "electrical": set(electrical_app.SUBSCRIBE),
    "graphical": set(graphical_app.SUBSCRIBE),
    "qa": set(qa_app.SUBSCRIBE),
    "fulfillment": set(fulfillment_app.SUBSCRIBE),
    "audit": {*audit_app.SUBSCRIBE, "dlq"},  # and the dead letters themselves, for the auditor
}


def test_each_service_may_read_the_streams_it_follows_with_its_own_group(
    objects: tuple[Obj, ...],
) -> None:
    users = {u["metadata"]["name"]: u["spec"] for u in of_kind(objects, "KafkaUser")}
    for name, spec in users.items():
        acls = spec["authorization"]["acls"]
        readable = {
            a["resource"]["name"]
            for a in acls
            if a["resource"]["type"] == "topic" and "Read" in a["operations"]
        }
        groups = {a["resource"]["name"] for a in acls if a["resource"]["type"] == "group"}
        assert readable == {f"bureau.{s}" for s in SUBSCRIPTIONS[name]}, name
        assert groups == {f"bureau.{name}"}, name


def test_postgres_acknowledges_a_commit_on_two_instances_in_prod() -> None:
    (cluster,) = of_kind(render("prod"), "Cluster")
    assert cluster["spec"]["instances"] >= 3
    assert cluster["spec"]["minSyncReplicas"] >= 1
    assert "s3Credentials" in cluster["spec"]["backup"]["barmanObjectStore"]
