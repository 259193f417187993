"""The Containerfile and the manifests agree: the user the pods run as, the entrypoint the
Deployments' args complete, the files keymgmt's settings point into, the build context.

No container engine is needed (none is on the development machines): the Containerfile is read
as text, its instructions checked against the rendered manifests.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from tests.support.k8s import OVERLAYS, bureau_deployments, render

REPO = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    text = (REPO / "Containerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)  # continuation lines
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def test_the_image_runs_as_the_user_the_pods_require() -> None:
    (user,) = [rest for keyword, rest in final_stage() if keyword == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), "a numeric USER lets the kubelet check runAsNonRoot"
    assert int(uid) != 0
    for overlay in OVERLAYS:
        for deployment in bureau_deployments(render(overlay)):
            pod = deployment["spec"]["template"]["spec"]["securityContext"]
            assert (pod["runAsUser"], pod["runAsGroup"]) == (int(uid), int(gid))


def test_each_service_is_one_command_of_the_one_image() -> None:
    (entrypoint,) = [rest for keyword, rest in final_stage() if keyword == "ENTRYPOINT"]
    assert entrypoint.endswith('"-m"]'), "Deployments pass the module: args [services.<name>]"
    env = " ".join(rest for keyword, rest in final_stage() if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "nothing may write .pyc on a read-only root"
    assert "BUREAU_HTTP_HOST=0.0.0.0" in env, "probes reach the pod's address, not loopback"
    images = {
        c["image"]
        for overlay in OVERLAYS
        for d in bureau_deployments(render(overlay))
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert len(images) == len(OVERLAYS), "one image per overlay for every service"


def test_keymgmt_openssl_config_is_in_the_image() -> None:
    # COPY [--from=...] <source> <destination>: destination in the image -> source
    copies = [rest.split() for keyword, rest in final_stage() if keyword == "COPY"]
    in_image = {words[-1]: words[-2] for words in copies}
    for overlay in OVERLAYS:
        objects = render(overlay)
        (config,) = [
            c
            for c in objects
            if c["kind"] == "ConfigMap" and c["metadata"]["name"].startswith("keymgmt-config")
        ]
        openssl_conf = config["data"]["OPENSSL_CONF"]
        assert openssl_conf in in_image
        assert (REPO / in_image[openssl_conf]).is_file()
        assert "legacy = legacy_sect" in (REPO / in_image[openssl_conf]).read_text()


def test_the_build_context_holds_what_the_build_copies_and_nothing_else() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "deny by default: keys, .run/ and tests never enter the context"

    def in_context(path: str) -> bool:
        included = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            bare = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, bare) or path.startswith(bare + "/"):
                included = negated
        return included

    for keyword, rest in instructions():
        if keyword == "COPY" and "--from=" not in rest:
            *sources, _dest = rest.split()
            for source in sources:
                assert in_context(source.rstrip("/")), f"COPY {source}: not in the build context"
                assert (REPO / source).exists(), source
    for private in (".run/env.sh", "tests/conftest.py", ".venv/bin/python", ".git/config"):
        assert not in_context(private), private
