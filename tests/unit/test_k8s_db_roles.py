"""deploy/k8s, least-privilege Postgres (issue 15): only the migration Jobs hold the schema
owner's credential; each Deployment gets its own runtime role's Secret, a role CloudNativePG
makes with no privilege of its own; every overlay renders so. No cluster needed (kustomize)."""

from __future__ import annotations

import pytest

from shared.migrate import MigrationSettings
from tests.support.k8s import OVERLAYS, REPO, Obj, of_kind, render

pytestmark = pytest.mark.timeout(900)  # the first render may build kustomize (test_k8s_manifests)
SERVICES = ["intake", "keymgmt", "electrical", "graphical", "qa", "fulfillment", "audit"]
OWNER_SECRET = "bureau-pg-app"  # CloudNativePG's application Secret: the database owner


@pytest.fixture(params=OVERLAYS)
def objects(request: pytest.FixtureRequest) -> tuple[Obj, ...]:
    return render(request.param)


def secrets_of(pod: Obj) -> set[str]:
    names = set()
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        for var in container.get("env", []):
            if ref := var.get("valueFrom", {}).get("secretKeyRef"):
                names.add(ref["name"])
    return names


def test_one_migration_job_per_service_holds_the_owner_credential(
    objects: tuple[Obj, ...],
) -> None:
    jobs = {job["metadata"]["name"]: job for job in of_kind(objects, "Job")}
    assert set(jobs) == {f"migrate-{service}" for service in SERVICES}
    reads = {f"BUREAU_{field.upper()}" for field in MigrationSettings.model_fields}
    for service in SERVICES:
        template = jobs[f"migrate-{service}"]["spec"]["template"]
        assert template["metadata"]["labels"]["cardbureau.io/postgres-client"] == "true"
        pod = template["spec"]
        assert pod["automountServiceAccountToken"] is False
        (container,) = pod["containers"]
        assert container["args"] == ["shared.migrate", service]
        assert "envFrom" not in container  # no service setting, token or Kafka principal
        env = {var["name"]: var for var in container["env"]}
        assert env["BUREAU_DATABASE_RUNTIME_ROLE"]["value"] == f"bureau_{service}"
        assert set(env) - {"DB_USER", "DB_PASSWORD"} <= reads
        assert secrets_of(pod) == {OWNER_SECRET}


def test_each_deployment_connects_as_its_own_runtime_role(objects: tuple[Obj, ...]) -> None:
    (cluster,) = of_kind(objects, "Cluster")
    roles = {role["name"]: role for role in cluster["spec"]["managed"]["roles"]}
    assert set(roles) == {f"bureau_{service}" for service in SERVICES}
    for service in SERVICES:
        role = roles[f"bureau_{service}"]
        assert (role["ensure"], role["login"]) == ("present", True)
        assert not any(role[flag] for flag in ("superuser", "createdb", "createrole", "inherit"))
        assert not any(role[flag] for flag in ("replication", "bypassrls"))
        assert role["passwordSecret"]["name"] == f"bureau-pg-{service}"
    for deployment in of_kind(objects, "Deployment"):
        name = deployment["metadata"]["name"]
        secrets = secrets_of(deployment["spec"]["template"]["spec"])
        database = {s for s in secrets if s.startswith("bureau-pg-")}
        assert OWNER_SECRET not in database, name
        assert database == ({f"bureau-pg-{name}"} if name in SERVICES else set()), name
    (config,) = [
        c
        for c in of_kind(objects, "ConfigMap")
        if c["metadata"]["name"].startswith("bureau-config")
    ]
    assert config["data"]["BUREAU_MIGRATE_ON_START"] == "false"


def test_every_database_secret_is_documented() -> None:
    guide = (REPO / "docs" / "deploy.md").read_text()
    for secret in [OWNER_SECRET, *(f"bureau-pg-{service}" for service in SERVICES)]:
        assert f"`{secret}`" in guide, f"docs/deploy.md does not say how to create {secret}"
