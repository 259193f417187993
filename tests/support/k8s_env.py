"""What a rendered overlay gives each container: its environment, resolved as the kubelet does
(envFrom, then env in order, `$(VAR)` expanded), with the Secrets `deploy.k8s.make_secrets`
makes and placeholders for what the site provides; and which roles each app's routes admit."""

from __future__ import annotations

import importlib
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic_settings import BaseSettings
from starlette.routing import BaseRoute

from deploy.k8s.make_secrets import Credentials
from services.audit.settings import AuditSettings
from services.audit.witness.settings import WitnessSettings
from services.fulfillment.settings import FulfillmentSettings
from services.graphical.settings import GraphicalSettings
from services.intake.settings import IntakeSettings
from services.keymgmt.keys.signing import SigningSettings
from services.keymgmt.pin_mailer.printing import PinMailerSettings
from services.keymgmt.settings import KeymgmtSettings
from shared.checkpoint_note import ecdsa_vkey
from shared.credentials import weakness
from tests.support.k8s import REPO, Obj, of_kind

# Every settings class each Deployment's process reads.
SETTINGS: dict[str, list[type[BaseSettings]]] = {
    "intake": [IntakeSettings],
    "keymgmt": [KeymgmtSettings, PinMailerSettings, SigningSettings],
    "graphical": [GraphicalSettings],
    "fulfillment": [FulfillmentSettings],
    "audit": [AuditSettings],
    "witness": [WitnessSettings],
}
# The people and stations of the test's site.
PEOPLE = [
    "operator:olga",
    "operator:omar",
    "auditor:ann",
    "admin:root",
    "custodian:carol",
    "custodian:dave",
    "station:station-07",
]
_REF = re.compile(r"\$\((\w+)\)")


def strong_secret() -> str:
    while weakness(token := secrets.token_urlsafe(32)):
        pass
    return token


def log_vkey(origin: str = "cardbureau/audit") -> str:
    """A C2SP vkey of a fresh P-256 key, as keymgmt's signing key gives it."""
    spki = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return ecdsa_vkey(origin, spki).render()


@dataclass
class Site:
    """The Secrets and ConfigMaps a site creates next to the overlay (docs/deploy.md)."""

    credentials: Credentials = field(default_factory=lambda: Credentials.make(PEOPLE))
    made: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.made = {n: m["stringData"] for n, m in self.credentials.manifests().items()}
        # Made by the site's own hands or operators: the HSM's PIN, CloudNativePG's role.
        self.made["keymgmt-hsm"] = {"pin": strong_secret(), "so-pin": strong_secret()}
        self.made["bureau-pg-app"] = {"username": "bureau", "password": strong_secret()}
        self.made["witness-trust"] = {"log-vkeys": log_vkey()}

    def value(self, kind: str, name: str, key: str) -> str:
        documented = f"`{name}`" in (REPO / "docs" / "deploy.md").read_text()
        if name not in self.made:
            assert documented, f"{kind} {name} is neither made by make_secrets nor documented"
            self.made[name] = {}
        data = self.made[name]
        if key not in data:
            assert documented, f"{kind} {name} has no key {key}"
            data[key] = strong_secret()  # an operator-made secret (Strimzi, CloudNativePG)
        return data[key]


def settings_from(
    cls: type[BaseSettings], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> BaseSettings:
    """The settings class on this environment alone (none of the test process's BUREAU_*)."""
    with monkeypatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("BUREAU_") or name == "OPENSSL_CONF":
                patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        return cls()


def container_env(container: Obj, objects: tuple[Obj, ...], site: Site) -> dict[str, str]:
    configs = {c["metadata"]["name"]: c.get("data", {}) for c in of_kind(objects, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if ref := source.get("configMapRef"):
            env |= configs[ref["name"]]
        else:
            name = source["secretRef"]["name"]
            env |= {key: site.value("Secret", name, key) for key in site.made.get(name, {})}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = _REF.sub(lambda m: env.get(m[1], m[0]), var["value"])
        elif ref := var["valueFrom"].get("secretKeyRef"):
            env[var["name"]] = site.value("Secret", ref["name"], ref["key"])
        else:
            ref = var["valueFrom"]["configMapKeyRef"]
            if ref["name"] in configs:
                env[var["name"]] = configs[ref["name"]][ref["key"]]
            else:
                env[var["name"]] = site.value("ConfigMap", ref["name"], ref["key"])
    return env


@dataclass(frozen=True)
class Admits:
    """Who a route lets in: roles, and for a `service` route the services it names (or any)."""

    roles: frozenset[str]
    services: tuple[str, ...] | None = None


def _admits(dependant: Dependant) -> Iterator[tuple[str, Any]]:
    call = dependant.call
    code = getattr(call, "__code__", None)
    if code is not None and "allowed" in code.co_freevars:  # shared.auth.require's dependency
        cells = getattr(call, "__closure__", None) or ()
        yield "roles", frozenset(cells[code.co_freevars.index("allowed")].cell_contents)
    if isinstance(getattr(call, "names", None), tuple):  # keymgmt's _ServiceCaller
        yield "services", call.names  # type: ignore[union-attr]
    for sub in dependant.dependencies:
        yield from _admits(sub)


def _routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    """The app's routes, through the included routers it nests."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        else:  # an included router: FastAPI nests it (its routes carry their full paths,
            # since the services include routers without a prefix, as shared/limits.py says)
            router = getattr(route, "original_router", route)
            yield from _routes(getattr(router, "routes", []))


def route_admissions(app: FastAPI) -> dict[tuple[str, str], Admits]:
    """(method, path) -> who it admits, for every authenticated route."""
    found = {}
    for route in _routes(app.routes):
        seen = dict(_admits(route.dependant))
        if "roles" not in seen:
            continue  # /health, /ready, /metrics, the auditor page's static files
        for method in route.methods or ():
            found[(method, route.path)] = Admits(seen["roles"], seen.get("services"))
    return found


def service_app(name: str) -> FastAPI:
    """The service's FastAPI app as build_app makes it (never started: no lifespan runs)."""
    module = importlib.import_module(f"services.{name}.app")
    settings = SETTINGS[name][0](environment="test")
    app: FastAPI = module.build_app(SimpleNamespace(name=name, settings=settings))
    return app
