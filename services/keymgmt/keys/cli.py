"""The key custodians' command line: `python -m services.keymgmt ceremony import|kek|demo-keys`
(the ceremony itself is ceremonies.py's, shared with the API and the demo driver). In production
only `import --wrapped` is accepted: clear components are refused, and the CLI, like the
service, refuses to run on a token that cannot keep them inside the HSM."""

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
    ensure_kek_recorded,
    load_demo_keys,
)
from services.keymgmt.keys.ceremony import CeremonyKeyType, KeyUsage
from services.keymgmt.keys.ceremony_kek import KEK_ALGORITHM
from services.keymgmt.keys.repository import KeysRepository
from services.keymgmt.keys.signing import key_id, pem
from services.keymgmt.settings import MIGRATIONS, KeymgmtSettings
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


async def _enter(ceremony: KeyCeremony, n: int, of: int, wrapped: bool, method: KcvMethod) -> None:
    name = _ask(f"Custodian {n} of {of}, your name: ")
    who = name or "custodian"
    if wrapped:
        blob = _ask(f"{who}, wrapped component {n} (base64, hidden): ", True)
        kcv = _ask(f"{who}, KCV on your component form: ")
        try:
            value = base64.b64decode(blob.strip(), validate=True)
        except ValueError:
            value = b""  # refused by the HSM as a component that does not unwrap
        await ceremony.add_wrapped_component(name, value, kcv, method)
    else:
        value_hex = _ask(f"{who}, key in component {n} (hex, hidden): ", True)
        kcv = _ask(f"{who}, KCV on your component form: ")
        await ceremony.add_component(name, value_hex, kcv, method)


async def import_interactively(settings: KeymgmtSettings, args: argparse.Namespace) -> str:
    """Prompt each custodian in turn for name, component (not echoed) and the KCV on the form.
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
    )
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
                await _enter(ceremony, n, spec.components, args.wrapped, method)
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
