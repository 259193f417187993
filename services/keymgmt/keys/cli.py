"""The key custodians' command line: `python -m services.keymgmt ceremony import|kek|demo-keys`
(the ceremony itself is ceremonies.py's, shared with the API and the demo driver). In production
only `import --wrapped` is accepted: clear components are refused, and the CLI, like the
service, refuses to run on a token that cannot keep them inside the HSM. Each custodian
authenticates with their own bearer token (typed hidden), checked here against keymgmt's
principal registry (BUREAU_PRINCIPALS), the same registry its API checks: the CLI runs on the
keymgmt host with the HSM in process, so it needs no network path to the API, and a custodian
is the same principal (`custodian:name`) whichever door they use."""

from __future__ import annotations

import argparse
import asyncio
import base64
import getpass
import sys
from collections.abc import Sequence

from services.keymgmt.hsm.kcv import KcvMethod
from services.keymgmt.hsm.mechanisms import ProductionRefused
from services.keymgmt.hsm.process import process_hsm, survey_mechanisms
from services.keymgmt.hsm.session import key_label
from services.keymgmt.keys.ceremonies import (
    CeremonyPolicy,
    CeremonyRefused,
    CeremonySpec,
    KeyCeremony,
    load_demo_keys,
)
from services.keymgmt.keys.ceremony import CeremonyKeyType, KeyUsage
from services.keymgmt.keys.ceremony_kek import KEK_ALGORITHM
from services.keymgmt.keys.kek_inventory import ensure_kek_recorded
from services.keymgmt.keys.repository import KeysRepository
from services.keymgmt.keys.signing import key_id, pem
from services.keymgmt.settings import MIGRATIONS, KeymgmtSettings
from shared.auth import Authenticator, Principal, StaticTokens
from shared.db import make_engine, migrate
from shared.logs import configure_logging


# -- the custodians' command line ---------------------------------------------------------------
def _ask(prompt: str, secret: bool = False) -> str:
    try:
        return getpass.getpass(prompt) if secret else input(prompt)
    except EOFError:
        return ""


def resolve_label(label: str, issuer_id: str) -> str:
    if "/" in label:
        if not label.startswith(f"{issuer_id}/"):
            raise ValueError(f"label {label} does not belong to issuer {issuer_id}")
        return label
    return key_label(issuer_id, label)


TOKEN_ATTEMPTS = 3  # tries a custodian has at the token prompt before the ceremony stops


async def _custodian(ceremony: KeyCeremony, registry: Authenticator, n: int, of: int) -> str:
    """The principal (`custodian:name`) of the token the next custodian types (not echoed),
    authenticated against keymgmt's principal registry, the one its API checks. An unknown
    token, another role, or a custodian the ceremony did not name for this component is a
    recorded refused attempt; after TOKEN_ATTEMPTS the ceremony is refused."""
    for _ in range(TOKEN_ATTEMPTS):
        token = _ask(f"Custodian {n} of {of}, your bearer token (hidden): ", True).strip()
        principal = await registry(token) if token else None
        if principal is None or principal.role != "custodian":
            why = "unknown or revoked credentials, or not a custodian's"
            await ceremony.refuse_attempt(None if principal is None else who_of(principal), why)
        elif (named := ceremony.named_for_next()) not in (None, who_of(principal)):
            why = f"component {n} is {named}'s step, not {who_of(principal)}'s"
            await ceremony.refuse_attempt(who_of(principal), why)
        else:
            return who_of(principal)
        sys.stdout.write(f"Refused: {why}.\n")
    await ceremony.stop(f"component {n}", None, "no authenticated custodian for this component")
    raise CeremonyRefused(f"no authenticated custodian for component {n}")


async def _enter(
    ceremony: KeyCeremony,
    registry: Authenticator,
    n: int,
    of: int,
    wrapped: bool,
    method: KcvMethod,
) -> None:
    who = await _custodian(ceremony, registry, n, of)
    sys.stdout.write(f"Authenticated as {who}.\n")
    if wrapped:
        blob = _ask(f"{who}, wrapped component {n} (base64, hidden): ", True)
        kcv = _ask(f"{who}, KCV on your component form: ")
        try:
            value = base64.b64decode(blob.strip(), validate=True)
        except ValueError:
            value = b""  # refused by the HSM as a component that does not unwrap
        await ceremony.add_wrapped_component(who, value, kcv, method)
    else:
        value_hex = _ask(f"{who}, key in component {n} (hex, hidden): ", True)
        kcv = _ask(f"{who}, KCV on your component form: ")
        await ceremony.add_component(who, value_hex, kcv, method)


def who_of(principal: Principal) -> str:
    """As keymgmt's API names a principal in its records (deps.who_of): `role:name`."""
    return f"{principal.role}:{principal.name}"


async def import_interactively(settings: KeymgmtSettings, args: argparse.Namespace) -> str:
    """Prompt each custodian in turn for their bearer token (not echoed; authenticated against
    the principal registry: the same custodian twice refuses the ceremony), their component
    (not echoed) and the KCV on the form.
    With --wrapped (the only way in production) each component is pasted as base64 RSA-OAEP
    under the key-exchange key (`ceremony kek`), unwrapped inside the HSM."""
    spec = CeremonySpec(
        label=resolve_label(args.label, args.issuer),
        issuer_id=args.issuer,
        key_type=CeremonyKeyType(args.type),
        usage=KeyUsage(args.usage),
        components=args.components,
        conducted_by=_operator(),
        expected_kcv=args.expected_kcv,
        custodians=tuple(f"custodian:{name}" for name in args.custodian or ()),
    )
    registry = StaticTokens(settings.principals)  # as keymgmt's API authenticates people
    method = {"cmac": KcvMethod.AES_CMAC, "zero": KcvMethod.AES_ZERO_BLOCK}[args.kcv_method]
    schema = args.schema or settings.keymgmt_schema
    engine = make_engine(settings.database_url, schema)
    try:
        await migrate(engine, schema, MIGRATIONS)
        async with process_hsm(settings) as hsm:
            inventory = await survey_mechanisms(hsm, settings)  # production: ProductionRefused
            policy = CeremonyPolicy.of(settings, inventory)
            ceremony = KeyCeremony(engine, hsm, spec, policy)
            await ceremony.open()
            sys.stdout.write(f"Key ceremony {ceremony.ceremony_id} for {spec.label}\n")
            for n in range(1, spec.components + 1):
                await _enter(ceremony, registry, n, spec.components, args.wrapped, method)
                sys.stdout.write(f"Component {n} accepted; next custodian, please.\n")
            result = await ceremony.complete()
    finally:
        await engine.dispose()
    return f"{spec.label} loaded, KCV " + ", ".join(str(k) for k in result.kcvs)


async def show_kek(settings: KeymgmtSettings, args: argparse.Namespace) -> str:
    """The key-exchange key's public half (PEM), generated in the HSM on first use."""
    schema = args.schema or settings.keymgmt_schema
    engine = make_engine(settings.database_url, schema)
    try:
        await migrate(engine, schema, MIGRATIONS)
        async with process_hsm(settings) as hsm, engine.begin() as conn:
            label = settings.ceremony_kek_label
            der = await ensure_kek_recorded(KeysRepository(conn), hsm, label, _operator())
    finally:
        await engine.dispose()
    return f"{label} ({KEK_ALGORITHM}), key id {key_id(der)}\n{pem(der)}"


def _operator() -> str:
    return f"cli:{getpass.getuser()}"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m services.keymgmt ceremony")
    sub = top.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="load a key from 2-3 custodians' components")
    imp.add_argument("--label", required=True, help="e.g. IMK-AC, or a full issuer/usage/1 label")
    imp.add_argument("--issuer", required=True)
    imp.add_argument("--type", required=True, choices=[t.value for t in CeremonyKeyType])
    imp.add_argument("--usage", required=True, choices=[u.value for u in KeyUsage])
    imp.add_argument("--components", type=int, choices=(2, 3), required=True)
    imp.add_argument("--expected-kcv", help="the issuer's KCV of the whole key")
    imp.add_argument(
        "--custodian",
        action="append",
        help="name the custodian of each component, in order (repeat once per component);"
        " each component is then that custodian's step only",
    )
    imp.add_argument("--kcv-method", choices=("cmac", "zero"), default="cmac", help="AES only")
    imp.add_argument("--schema", help="database schema (default: the service's)")
    imp.add_argument(
        "--wrapped",
        action="store_true",
        help="components are base64 RSA-OAEP under the key-exchange key (required in production)",
    )
    kek = sub.add_parser("kek", help="print the key-exchange key components are wrapped under")
    kek.add_argument("--schema", help="database schema (default: the service's)")
    demo = sub.add_parser("demo-keys", help="load the public TEST keys (dev/test only)")
    demo.add_argument("--issuer", required=True)
    demo.add_argument("--schema", help="database schema (default: the service's)")
    demo.add_argument(
        "--emv", action="store_true", help="also the PIN key and CVKs of an EMV-profile product"
    )
    return top


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    settings = KeymgmtSettings()
    configure_logging("keymgmt-ceremony", settings.log_level)
    try:
        if args.command == "import":
            sys.stdout.write(asyncio.run(import_interactively(settings, args)) + "\n")
        elif args.command == "kek":
            sys.stdout.write(asyncio.run(show_kek(settings, args)))
        else:
            demo_keys = load_demo_keys(settings, args.issuer, schema=args.schema, emv=args.emv)
            labels = asyncio.run(demo_keys)
            sys.stdout.write(f"imported: {', '.join(labels) or 'nothing (all present)'}\n")
    except (CeremonyRefused, ProductionRefused, ValueError) as exc:
        sys.stderr.write(f"REFUSED: {exc}\n")
        return 2
    return 0
