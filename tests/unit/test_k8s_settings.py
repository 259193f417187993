"""Each overlay's rendered environment passes every service's settings validation (issue 15).

Every overlay is rendered with kustomize (tests/support/k8s.py); each Deployment's container gets
the environment the kubelet would give it, from the rendered ConfigMaps, the per-workload
Secrets `python -m deploy.k8s.make_secrets` makes, and the site's own (HSM PIN, database role,
the witness's trusted log key) as fresh strong values; then every settings class the process
reads is built from exactly that environment. The prod overlay thereby passes the production
guard, and no setting is left at a local-stack default (127.0.0.1, localhost)."""

from __future__ import annotations

import pytest

from deploy.k8s.make_secrets import SERVICE_CALLERS
from services.audit.witness.settings import WitnessSettings
from shared.settings import BureauSettings
from tests.support.k8s import OVERLAYS, Obj, of_kind, render
from tests.support.k8s_env import SETTINGS, Site, container_env, settings_from

LOCAL_DEFAULTS = ("127.0.0.1", "localhost")
# Read outside the settings classes, so not BUREAU_*: set by the kubelet's environment only.
ENVIRONMENT = {"dev": "dev", "prod": "prod"}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, tuple[Obj, ...]]:
    return request.param, render(request.param)


def bureau_processes(objects: tuple[Obj, ...]) -> list[Obj]:
    """The Deployments that run a module of ours (`python -m services...`)."""
    return [
        d
        for d in of_kind(objects, "Deployment")
        if d["spec"]["template"]["spec"]["containers"][0]
        .get("args", [""])[0]
        .startswith("services.")
    ]


def test_every_bureau_deployment_is_known_here(overlay: tuple[str, tuple[Obj, ...]]) -> None:
    _, objects = overlay
    assert {d["metadata"]["name"] for d in bureau_processes(objects)} == set(SETTINGS)


def test_each_overlays_environment_passes_every_services_settings(
    overlay: tuple[str, tuple[Obj, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    name_of_overlay, objects = overlay
    site = Site()
    for deployment in bureau_processes(objects):
        name = deployment["metadata"]["name"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = container_env(container, objects, site)
        for cls in SETTINGS[name]:
            settings = settings_from(
                cls, env, monkeypatch
            )  # raises ValidationError naming the setting
            where = f"{name_of_overlay}/{name}: {cls.__name__}"
            for field, value in settings.model_dump().items():
                text = str(value)
                assert not any(local in text for local in LOCAL_DEFAULTS), f"{where}.{field}"
            if isinstance(settings, BureauSettings):
                assert settings.environment == ENVIRONMENT[name_of_overlay], where
                if name in SERVICE_CALLERS:
                    assert settings.token_for(name)  # its own token, not a verifier
            if isinstance(settings, WitnessSettings):
                assert settings.logs(), f"{where}: no log to witness (BUREAU_WITNESS_LOG_VKEYS)"


def test_the_prod_overlay_is_refused_with_a_weak_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The validation above has teeth: the same environment with one weak token fails."""
    objects = render("prod")
    site = Site()
    site.made["intake-credentials"]["webhook-key"] = "short"
    (intake,) = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == "intake"]
    env = container_env(intake["spec"]["template"]["spec"]["containers"][0], objects, site)
    with pytest.raises(ValueError, match="BUREAU_WEBHOOK_KEY is shorter than 32") as caught:
        settings_from(SETTINGS["intake"][0], env, monkeypatch)
    assert env["BUREAU_DATABASE_URL"].split(":")[2].split("@")[0] not in str(caught.value)
