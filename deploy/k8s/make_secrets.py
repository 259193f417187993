"""Make every bureau credential once, and give each workload only its own.

    python -m deploy.k8s.make_secrets --out DIR operator:olga auditor:ann admin:root \\
        custodian:carol custodian:dave station:station-07 [...]

Writes, under DIR (mode 0700, files 0600):
- `k8s/<workload>-credentials.json`: one Secret per Deployment (`kubectl apply -f DIR/k8s`).
  `service-tokens` is the workload's own token and the verifiers (`sha256:<hex>`) of the services
  that call it; `principals` is the verifiers of the people and stations it admits, by role
  (CHECKS below, which tests/unit/test_k8s_secrets.py compares with the routes' roles);
  intake's also has its `idempotency-secret` and `webhook-key`.
- `stations/<station>/station-token` and `qa/service-tokens`: the floor agents' credential
  files (deploy/station/README.md).
- `people/<role>_<name>`: each person's token, to hand over once and delete.
Every token is 32 random bytes (secrets.token_urlsafe) that the production guard accepts
(shared/credentials.py). Verifiers carry no secret: a workload holding one cannot call anyone.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.credentials import verifier_of, weakness

SERVICE_CALLERS = ("intake", "graphical", "fulfillment", "qa", "audit")  # hold a service token
ROLES = ("operator", "auditor", "admin", "custodian", "station")


@dataclass(frozen=True)
class Checks:
    """Whom a workload admits: services by name, and configured principals by role."""

    services: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()


# Issuers are intake's records (GET /v1/whoami), never a static principal.
CHECKS = {
    "intake": Checks(roles=("operator", "admin")),
    "keymgmt": Checks(
        services=("intake", "graphical", "fulfillment", "qa", "audit"),
        roles=("custodian", "admin", "auditor", "station", "operator"),
    ),
    "graphical": Checks(services=("qa",), roles=("operator", "admin", "auditor")),
    "fulfillment": Checks(roles=("operator",)),
    "audit": Checks(roles=("operator", "auditor", "admin")),
}
OWN_SECRETS = {"intake": ("idempotency-secret", "webhook-key")}


def new_token() -> str:
    while weakness(token := secrets.token_urlsafe(32)):
        pass  # "dev" as a word, a repeat or a run: one draw in many thousands
    return token


@dataclass
class Credentials:
    services: dict[str, str]  # service -> token
    principals: dict[str, str]  # role:name[:issuer] -> token

    @classmethod
    def make(cls, principals: list[str]) -> Credentials:
        for who in principals:
            parts = who.split(":")
            if len(parts) not in (2, 3) or parts[0] not in ROLES or not parts[1]:
                sys.exit(f"make_secrets: {who!r} is not role:name[:issuer], role one of {ROLES}")
        return cls(
            services={name: new_token() for name in SERVICE_CALLERS},
            principals={who: new_token() for who in dict.fromkeys(principals)},
        )

    def service_tokens_for(self, workload: str) -> str:
        entries = [f"{workload}={self.services[workload]}"] if workload in self.services else []
        entries += [f"{s}={verifier_of(self.services[s])}" for s in CHECKS[workload].services]
        return ",".join(entries)

    def principals_for(self, workload: str) -> str:
        return ",".join(
            f"{who}={verifier_of(token)}"
            for who, token in self.principals.items()
            if who.split(":")[0] in CHECKS[workload].roles
        )

    def secret_data(self, workload: str) -> dict[str, str]:
        data = {
            "service-tokens": self.service_tokens_for(workload),
            "principals": self.principals_for(workload),
        }
        data |= {key: new_token() for key in OWN_SECRETS.get(workload, ())}
        return data

    def manifests(self) -> dict[str, dict[str, Any]]:
        """The Secret of each Deployment, by name."""
        return {
            f"{workload}-credentials": {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {
                    "name": f"{workload}-credentials",
                    "namespace": "cardbureau",
                    "labels": {"app.kubernetes.io/name": workload},
                },
                "stringData": self.secret_data(workload),
            }
            for workload in CHECKS
        }


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def write(credentials: Credentials, out: Path) -> None:
    for name, manifest in credentials.manifests().items():
        # JSON, which kubectl reads like YAML: the tool needs nothing beyond the standard library
        _write(out / "k8s" / f"{name}.json", json.dumps(manifest, indent=2) + "\n")
    for who, token in credentials.principals.items():
        role, name, *_ = who.split(":")
        if role == "station":
            _write(out / "stations" / name / "station-token", token)
        else:
            _write(out / "people" / who.replace(":", "_"), token)
    _write(out / "qa" / "service-tokens", f"qa={credentials.services['qa']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deploy.k8s.make_secrets", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="a new directory")
    parser.add_argument("principals", nargs="+", help="role:name[:issuer], one per person/station")
    args = parser.parse_args(argv)
    if args.out.exists():
        sys.exit(f"make_secrets: {args.out} exists; it never overwrites credentials")
    args.out.mkdir(mode=0o700, parents=True)
    write(Credentials.make(args.principals), args.out)
    sys.stdout.write(
        f"made in {args.out}: kubectl apply -f {args.out}/k8s; hand out people/, stations/\n"
    )


if __name__ == "__main__":
    main()
