"""The rendered Kubernetes overlays (kustomize) for the manifest tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


K8S = REPO / "deploy" / "k8s"


OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())


KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5@v5.5.0"


Obj = dict[str, Any]


@cache
def kustomize() -> list[str] | None:
    """The kustomize command: kubectl's built-in one, else one go-installed into .run/bin."""
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    built = REPO / ".run" / "bin" / "kustomize"
    if built.exists():
        return [str(built), "build"]
    go = shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go",) if os.access(p, os.X_OK)), None
    )
    if go is None:
        return None
    built.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(built.parent), "GOFLAGS": "-mod=mod"}
    subprocess.run([go, "install", KUSTOMIZE_MODULE], check=True, env=env, timeout=900)
    return [str(built), "build"]


@cache
def render(overlay: str) -> tuple[Obj, ...]:
    command = kustomize()
    if command is None:
        pytest.skip("neither kubectl nor go is installed: cannot get kustomize to render")
    done = subprocess.run(
        [*command, str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"kustomize failed on {overlay}:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def of_kind(objects: tuple[Obj, ...], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def bureau_deployments(objects: tuple[Obj, ...]) -> list[Obj]:
    return [
        d
        for d in of_kind(objects, "Deployment")
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == "service"
    ]
