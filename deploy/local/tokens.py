"""The local stack's HTTP tokens: one random token per principal, each workload given only its own.

    python -m deploy.local.tokens --creds-dir <run>/creds      (deploy/local/stack.sh up runs it)

Writes, in the creds directory (mode 0700, files 0600), what deploy/local/services.sh sources
into one workload's process only (`load_creds`):
- `<workload>.tokens.env` for each workload: `BUREAU_SERVICE_TOKENS` with its own token (the
  services that call others) and the verifiers `sha256:<hex>` of the services that call it,
  `BUREAU_PRINCIPALS` with the verifiers of the people and stations its routes admit, and
  electrical's own station token (`BUREAU_STATION_TOKEN`), intake's own idempotency secret
  and webhook key (`BUREAU_IDEMPOTENCY_SECRET`, `BUREAU_WEBHOOK_KEY`). Whom each admits is
  deploy/k8s/make_secrets.py's CHECKS, the same as in Kubernetes; the floor workloads
  (electrical, qa) and the witness and the feeder admit no one. Both settings are always
  written, empty when there is nothing, so no workload falls back to the development defaults.
- `tools.tokens.env`: the clear tokens of the people (operators, auditor, admin, custodians),
  for the demo, the tests, the benchmarks and humans (`source <run>/creds/tools.tokens.env`):
  `BUREAU_PEOPLE_TOKENS` (`role:name=token,...`) and `BUREAU_AUDITOR_TOKEN` (what the audit
  verifier reads). No workload is given this file.

The tokens are made once per stack: a second run reads each owner's token back from its file
and writes every file again (so a change of whom a workload admits applies), and a running
service keeps working. A missing or unreadable file makes every token afresh.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from deploy.k8s.make_secrets import CHECKS, OWN_SECRETS, SERVICE_CALLERS, Credentials, new_token
from shared.credentials import read_exports, split_entries

WORKLOADS = (
    "intake",
    "keymgmt",
    "electrical",
    "graphical",
    "qa",
    "fulfillment",
    "audit",
    "witness",
    "feeder",
)
STATION = "station:station-a"  # electrical's principal (ElectricalSettings.station_id)
# The people of the local stack, with the names the demo and the tests use.
PEOPLE = (
    "admin:root",
    "operator:olga",
    "operator:oscar",  # the second operator of dual control
    "auditor:ann",
    "custodian:cora",
    "custodian:cyril",
)
TOOLS = "tools"
# A workload's own secrets besides its token, as its settings name them (intake's
# idempotency-secret and webhook-key: BUREAU_IDEMPOTENCY_SECRET, BUREAU_WEBHOOK_KEY).
OWN = {
    w: tuple("BUREAU_" + k.upper().replace("-", "_") for k in ks) for w, ks in OWN_SECRETS.items()
}


@dataclass
class LocalCredentials(Credentials):
    own: dict[str, dict[str, str]] = field(default_factory=dict)  # workload -> setting -> secret


def exports(header: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        if "'" in value or "\n" in value:
            raise ValueError(f"{name}: a value with a quote or a newline")
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    return "\n".join(lines + [f"export {n}='{v}'" for n, v in values.items()]) + "\n"


def workload_env(credentials: LocalCredentials, workload: str) -> dict[str, str]:
    """What one workload is given: its own token(s) and the verifiers of those it admits."""
    if workload in CHECKS:
        env = {
            "BUREAU_SERVICE_TOKENS": credentials.service_tokens_for(workload),
            "BUREAU_PRINCIPALS": credentials.principals_for(workload),
        }
    else:
        own = credentials.services.get(workload)
        env = {
            "BUREAU_SERVICE_TOKENS": f"{workload}={own}" if own else "",
            "BUREAU_PRINCIPALS": "",
        }
    if workload == "electrical":
        env["BUREAU_STATION_TOKEN"] = credentials.principals[STATION]
    return env | credentials.own.get(workload, {})


def tools_env(credentials: Credentials) -> dict[str, str]:
    people = {who: token for who, token in credentials.principals.items() if who in PEOPLE}
    return {
        "BUREAU_PEOPLE_TOKENS": ",".join(f"{who}={token}" for who, token in people.items()),
        "BUREAU_AUDITOR_TOKEN": people["auditor:ann"],
    }


def read_back(creds: Path) -> LocalCredentials | None:
    """The tokens an earlier run made, each from its owner's file; None if any is missing."""
    try:
        files = {w: read_exports(creds / f"{w}.tokens.env") for w in (*WORKLOADS, TOOLS)}
    except OSError:
        return None
    services = {}
    for name in SERVICE_CALLERS:
        services[name] = dict(split_entries(files[name].get("BUREAU_SERVICE_TOKENS", ""))).get(
            name, ""
        )
    principals = dict(split_entries(files[TOOLS].get("BUREAU_PEOPLE_TOKENS", "")))
    principals[STATION] = files["electrical"].get("BUREAU_STATION_TOKEN", "")
    own = {w: {name: files[w].get(name, "") for name in names} for w, names in OWN.items()}
    tokens = [
        *services.values(),
        *principals.values(),
        *(v for o in own.values() for v in o.values()),
    ]
    if set(principals) != {*PEOPLE, STATION} or any(
        not t or t.startswith("sha256:") for t in tokens
    ):
        return None
    return LocalCredentials(services=services, principals=principals, own=own)


def make() -> LocalCredentials:
    return LocalCredentials(
        services={name: new_token() for name in SERVICE_CALLERS},
        principals={who: new_token() for who in (*PEOPLE, STATION)},
        own={w: {name: new_token() for name in names} for w, names in OWN.items()},
    )


def write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o600)  # an older .tmp keeps its mode through O_CREAT
    tmp.replace(path)


def write(credentials: LocalCredentials, creds: Path) -> None:
    creds.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(creds, 0o700)
    for workload in WORKLOADS:
        header = (
            "Written by deploy/local/tokens.py: this workload's own HTTP token(s) and the\n"
            "verifiers of those it admits (services.sh sources it into its process only)."
        )
        text = exports(header, workload_env(credentials, workload))
        write_private(creds / f"{workload}.tokens.env", text)
    header = (
        "Written by deploy/local/tokens.py: the people's tokens, for the demo, tests and\n"
        "humans (source it); no workload is given this file."
    )
    write_private(creds / f"{TOOLS}.tokens.env", exports(header, tools_env(credentials)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.tokens", description=__doc__)
    parser.add_argument("--creds-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    kept = read_back(args.creds_dir)
    write(kept or make(), args.creds_dir)
    how = "kept" if kept else "made"
    sys.stdout.write(f"tokens: {how} one per principal; each workload's in {args.creds_dir}\n")


if __name__ == "__main__":
    main()
