"""deploy/k8s: every overlay renders with kustomize, every object passes the Kubernetes schemas
offline (kubernetes-validate; Strimzi and CloudNativePG objects against the shapes in
test_k8s_crds.py), and the deployment policies of issue 8 hold. No cluster needed.

kustomize comes from `kubectl kustomize` when kubectl is installed, else from .run/bin/kustomize,
built with `go install` on first use; the tests skip, saying so, only when neither exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from pydantic_settings import BaseSettings

from services.audit.witness.settings import WitnessSettings
from shared.settings import BureauSettings
from shared.telemetry import OTLP_SETTINGS
from tests.support.k8s import OVERLAYS, REPO, Obj, bureau_deployments, of_kind, render
from tests.support.k8s_env import SETTINGS

KUBERNETES_VERSION = "1.32.0"  # the oldest minor the manifests promise to apply on

# The first run on a machine without kubectl builds kustomize (go install): minutes, once.
pytestmark = pytest.mark.timeout(900)
CRD_GROUPS = ("kafka.strimzi.io/", "postgresql.cnpg.io/")
CONSUMERS = {  # Deployment -> topics it follows (docs/services.md); intake consumes nothing
    "keymgmt": ["intake"],
    "graphical": ["electrical"],
    "fulfillment": ["electrical", "graphical", "qa", "audit"],
    "audit": ["intake", "keymgmt", "electrical", "graphical", "qa", "fulfillment", "audit"],
}
# Variables read by code other than the services' settings classes.
# Read outside the services' settings classes: the database role, the HSM and pcsc libraries,
# and the standard OpenTelemetry exporter settings (shared/telemetry.py checks them).
NON_SETTINGS_ENV = {
    "DB_USER",
    "DB_PASSWORD",
    "SOFTHSM2_CONF",
    "PCSCLITE_CSOCK_NAME",
    *OTLP_SETTINGS,
}
SECRET_NAME = re.compile(r"(?i)(pin|password|passwd|token|secret|private|credential)")
# The HSM token's label and the PIN printer's address: not credentials.
NOT_SECRET = {"BUREAU_HSM_TOKEN", "BUREAU_PIN_PRINTER_URI"}


@pytest.fixture(params=OVERLAYS)
def objects(request: pytest.FixtureRequest) -> tuple[Obj, ...]:
    return render(request.param)


def named(objects: tuple[Obj, ...], kind: str, name: str) -> Obj:
    (found,) = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    return found


def pod_specs(objects: tuple[Obj, ...]) -> Iterator[tuple[str, Obj]]:
    for workload in of_kind(objects, "Deployment"):
        yield workload["metadata"]["name"], workload["spec"]["template"]["spec"]


def containers(pod: Obj) -> list[Obj]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def test_every_overlay_renders_the_whole_bureau() -> None:
    assert OVERLAYS == ["dev", "prod"]
    for overlay in OVERLAYS:
        kinds = {o["kind"] for o in render(overlay)}
        assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds
        assert {"NetworkPolicy", "ConfigMap", "Kafka", "KafkaTopic", "KafkaUser"} <= kinds
        assert {"Cluster", "KafkaNodePool"} <= kinds


def test_builtin_objects_pass_the_kubernetes_schemas_strictly(objects: tuple[Obj, ...]) -> None:
    validated = 0
    for obj in objects:
        if obj["apiVersion"].startswith(CRD_GROUPS):
            continue  # test_k8s_crds.py
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        validated += 1
    assert validated > 40


def test_pods_run_as_non_root_on_a_read_only_root_fs(objects: tuple[Obj, ...]) -> None:
    for name, pod in pod_specs(objects):
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert security.get("runAsUser", 1) != 0, name
        assert security["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in containers(pod):
            where = f"{name}/{container['name']}"
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["capabilities"]["drop"] == ["ALL"], where
            assert not ctx.get("privileged", False), where
            assert ctx.get("runAsUser", 1) != 0, where
        assert not any("hostPath" in volume for volume in pod.get("volumes", [])), name


def test_every_container_has_requests_and_limits(objects: tuple[Obj, ...]) -> None:
    for name, pod in pod_specs(objects):
        for container in containers(pod):
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[bound]), f"{name}: {bound}"


def test_services_probe_health_and_ready_on_their_port(objects: tuple[Obj, ...]) -> None:
    deployments = bureau_deployments(objects)
    assert {d["metadata"]["name"] for d in deployments} == {
        "intake",
        "keymgmt",
        "graphical",
        "fulfillment",
        "audit",
    }
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"] == [f"services.{name}"]
        assert (REPO / "services" / name / "__main__.py").exists()
        assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
        assert container["startupProbe"]["httpGet"]["path"] == "/health"
        (port,) = container["ports"]
        service = named(objects, "Service", name)
        assert service["spec"]["selector"] == {"app.kubernetes.io/name": name}
        assert service["spec"]["ports"][0]["targetPort"] == port["name"] == "http"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port["containerPort"])
        assert annotations["prometheus.io/path"] == "/metrics"


def test_disruption_budgets_and_autoscalers(objects: tuple[Obj, ...]) -> None:
    partitions = {
        t["spec"]["topicName"]: t["spec"]["partitions"] for t in of_kind(objects, "KafkaTopic")
    }
    budgets = {p["metadata"]["name"] for p in of_kind(objects, "PodDisruptionBudget")}
    scalers = {
        h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(objects, "HorizontalPodAutoscaler")
    }
    for deployment in of_kind(objects, "Deployment"):
        assert deployment["metadata"]["name"] in budgets
    assert set(scalers) == set(CONSUMERS)
    for name, follows in CONSUMERS.items():
        # More consumers than partitions would sit idle: the HPA stops at the smallest topic.
        most_useful = min(partitions[f"bureau.{stream}"] for stream in follows)
        assert scalers[name]["spec"]["maxReplicas"] <= most_useful, name


def test_no_secret_values_in_the_manifests(objects: tuple[Obj, ...]) -> None:
    assert not of_kind(objects, "Secret"), "Secrets are referenced, never shipped"
    dev_secrets = {
        token
        for value in BureauSettings(environment="dev").secret_values().values()
        for token in re.split(r"[,=:@/]", value)
        if "dev" in token
    }
    text = yaml.safe_dump_all(objects)
    for secret in dev_secrets:
        assert secret not in text
    for config in of_kind(objects, "ConfigMap"):
        for key in config.get("data", {}):
            assert key in NOT_SECRET or not SECRET_NAME.search(key), key
    for name, pod in pod_specs(objects):
        for container in containers(pod):
            for var in container.get("env", []):
                if (
                    var["name"] not in NOT_SECRET
                    and SECRET_NAME.search(var["name"])
                    and "value" in var
                ):
                    pytest.fail(f"{name}: {var['name']} has a literal value")
                # A value may only refer to secret variables, never spell them out.
                if "value" in var and "PASSWORD" in var["value"]:
                    assert "$(DB_PASSWORD)" in var["value"], var["name"]


def test_every_referenced_secret_is_documented(objects: tuple[Obj, ...]) -> None:
    referenced: set[str] = set()
    for _name, pod in pod_specs(objects):
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                referenced.add(volume["secret"]["secretName"])
        for container in containers(pod):
            for var in container.get("env", []):
                if ref := var.get("valueFrom", {}).get("secretKeyRef"):
                    referenced.add(ref["name"])
    guide = (REPO / "docs" / "deploy.md").read_text()
    assert referenced
    for secret in referenced:
        assert f"`{secret}`" in guide, f"docs/deploy.md does not say how to create {secret}"


def test_default_deny_and_only_keymgmt_reaches_the_hsm(objects: tuple[Obj, ...]) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(objects, "NetworkPolicy")}
    deny = policies["default-deny"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    hsm = policies["keymgmt-to-hsm"]
    assert hsm["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "keymgmt"}}
    hsm_blocks = {peer["ipBlock"]["cidr"] for rule in hsm["egress"] for peer in rule["to"]}
    for name, spec in policies.items():
        for rule in spec.get("egress", []):
            for peer in rule.get("to", []):
                if peer.get("ipBlock", {}).get("cidr") in hsm_blocks:
                    assert spec["podSelector"] == hsm["podSelector"], name
    # Pods outside the bureau's reach nothing but DNS and their own peers: no blanket egress.
    for name, spec in policies.items():
        for rule in spec.get("egress", []):
            assert rule.get("to") or rule.get("ports"), f"{name}: egress to anything"


def test_the_hsm_module_is_mounted_into_keymgmt_alone(objects: tuple[Obj, ...]) -> None:
    for name, pod in pod_specs(objects):
        volumes = {v["name"] for v in pod.get("volumes", [])}
        mounts = {m["mountPath"] for c in containers(pod) for m in c.get("volumeMounts", [])}
        hsm_mounts = {m for m in mounts if m.startswith(("/opt/hsm", "/etc/hsm"))}
        if name == "keymgmt":
            assert "hsm-module" in volumes
            assert "/opt/hsm" in hsm_mounts
        else:
            assert not any(v.startswith("hsm") for v in volumes), name
            assert not hsm_mounts, name


def settings_env_names(service: str) -> set[str]:
    """The variables every settings class the service's process reads (k8s_env.SETTINGS)."""
    names = set()
    for cls in SETTINGS[service]:
        assert issubclass(cls, BaseSettings)
        prefix = cls.model_config.get("env_prefix", "")
        for field, info in cls.model_fields.items():
            names.add(f"{prefix}{field}".upper())
            alias = info.validation_alias
            for choice in getattr(alias, "choices", []):
                if isinstance(choice, str):
                    names.add(choice.upper())
    return names


def test_every_variable_given_to_a_service_is_a_setting_it_reads(
    objects: tuple[Obj, ...],
) -> None:
    configs = {c["metadata"]["name"]: c.get("data", {}) for c in of_kind(objects, "ConfigMap")}
    for deployment in bureau_deployments(objects):
        name = deployment["metadata"]["name"]
        known = settings_env_names(name) | NON_SETTINGS_ENV
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        given = {var["name"] for var in container["env"]}
        for source in container["envFrom"]:
            given |= set(configs[source["configMapRef"]["name"]])
        assert given - known == set(), name


def test_services_start_after_the_replicated_topics_exist(objects: tuple[Obj, ...]) -> None:
    topics = {t["spec"]["topicName"] for t in of_kind(objects, "KafkaTopic")}
    for deployment in bureau_deployments(objects):
        name = deployment["metadata"]["name"]
        inits = deployment["spec"]["template"]["spec"]["initContainers"]
        (wait,) = [c for c in inits if c["name"] == "wait-for-topics"]
        assert wait["args"] == ["deploy.image.wait_for_topics"]
        env = {var["name"]: var["value"] for var in wait["env"] if "value" in var}
        streams = set(env["BUREAU_WAIT_FOR_TOPICS"].split(","))
        assert {*CONSUMERS.get(name, []), name, "dlq"} <= streams, name
        assert {f"bureau.{s}" for s in streams} <= topics, name


def test_the_witness_runs_alone_with_its_own_key_store_and_no_credential(
    objects: tuple[Obj, ...],
) -> None:
    deployment = named(objects, "Deployment", "witness")
    spec = deployment["spec"]
    assert (spec["replicas"], spec["strategy"]["type"]) == (1, "Recreate")
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["services.audit.witness"]
    assert "secretKeyRef" not in yaml.safe_dump(deployment)  # no database, Kafka or token
    (source,) = container["envFrom"]
    assert source["configMapRef"]["name"].startswith("witness-config")
    (volume,) = pod["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == "witness-store"
    config = {c["metadata"]["name"]: c.get("data", {}) for c in of_kind(objects, "ConfigMap")}
    witness_config = next(v for k, v in config.items() if k.startswith("witness-config"))
    assert witness_config["BUREAU_WITNESS_DIR"] == container["volumeMounts"][0]["mountPath"]
    reads = {f"BUREAU_WITNESS_{field.upper()}" for field in WitnessSettings.model_fields}
    assert set(witness_config) <= reads
    audit_config = next(v for k, v in config.items() if k.startswith("audit-config"))
    assert audit_config["BUREAU_WITNESS_URL"] == "http://witness:8108"
    policy = named(objects, "NetworkPolicy", "witness-api")["spec"]
    (allowed,) = policy["ingress"]
    assert allowed["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "audit"}}}
    ]
    assert policy["egress"] == []


def test_keymgmt_verifies_issuer_tokens_at_intake_and_only_there(objects: tuple[Obj, ...]) -> None:
    config = {c["metadata"]["name"]: c.get("data", {}) for c in of_kind(objects, "ConfigMap")}
    keymgmt_config = next(v for k, v in config.items() if k.startswith("keymgmt-config"))
    assert keymgmt_config["BUREAU_INTAKE_URL"] == "http://intake:8101"
    egress = named(objects, "NetworkPolicy", "keymgmt-to-intake")["spec"]["egress"]
    assert egress == [
        {
            "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "intake"}}}],
            "ports": [{"protocol": "TCP", "port": 8101}],
        }
    ]
    (ingress,) = named(objects, "NetworkPolicy", "intake-from-keymgmt")["spec"]["ingress"]
    assert ingress["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "keymgmt"}}}
    ]
