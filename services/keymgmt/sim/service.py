"""SIM products and batches: the operator's OP sealed under the vault key, batches of Ki/OPc
made in the HSM (HSM-worker function), checks of a product's ranges and transport key, and the
operator's output file. No database here: the caller passes what it read."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from services.keymgmt.hsm.session import Hsm, key_label
from services.keymgmt.sim.credentials import (
    OTA_NAMES,
    PIN_NAMES,
    SimCredentials,
    credential_columns,
)
from services.keymgmt.sim.schemas import SimProductIn
from services.keymgmt.sim.secrets import (
    WRAP_NAME,
    SimSecrets,
    generate_sim_secrets,
    iccid_span,
    imsi_span,
    make_iccid,
    make_imsi,
    spans_overlap,
)
from services.keymgmt.vault.crypto import open_sealed


def op_context(issuer_id: str, product_id: str) -> bytes:
    return f"sim-op|{issuer_id}|{product_id}".encode()


def make_batch(
    hsm: Hsm, op_sealed: bytes, context: bytes, storage: str, transport: str, count: int
) -> list[SimSecrets]:
    """Open OP on the HSM worker, make ``count`` Ki/OPc pairs, zero the OP copy we own."""
    op = bytearray(open_sealed(hsm, op_sealed, context))
    try:
        return generate_sim_secrets(hsm, bytes(op), storage, transport, count)
    finally:
        op[:] = bytes(len(op))


def transport_key_problem(row: Mapping[str, Any] | None, label: str, issuer_id: str) -> str | None:
    """Why the key cannot be a SIM product's transport key, or None when it can: it must be
    the operator's own (imported from its components or exchanged under its public key),
    never a bureau key the operator could not open its file with."""
    if row is None or row["state"] != "active" or row["usage"] != "wrap":
        return f"{label} is not an active wrap key in the inventory"
    if row["issuer_id"] != issuer_id:
        owner = "the bureau" if row["issuer_id"] == "bureau" else "another issuer"
        return f"{label} belongs to {owner}, not to operator {issuer_id}"
    if row.get("origin") == "generated":
        return (
            f"{label} was generated in the HSM and never given to operator {issuer_id}: import"
            " it from the operator's components or exchange it under the operator's RSA key"
        )
    return None


def check_ranges(issuer_id: str, body: SimProductIn) -> None:
    """ValueError when the issuer id cannot name keys or the serial range does not fit."""
    key_label(issuer_id, "SIM")  # the issuer id must be able to name keys
    if body.last_serial < body.first_serial:
        raise ValueError("last_serial is before first_serial")
    make_iccid(body.iccid_prefix, body.last_serial, body.iccid_length)  # the range fits
    make_imsi(body.imsi_prefix, body.last_serial)


def range_problems(
    body: SimProductIn, existing: Mapping[str, Any] | None, others: Sequence[Mapping[str, Any]]
) -> str | None:
    """Why a product's numbering cannot be set so, or None: fixed fields of an existing
    product, or ICCID/IMSI ranges that overlap another product's."""
    fixed = ("iccid_prefix", "iccid_length", "imsi_prefix", "first_serial")
    changed = [f for f in fixed if existing is not None and existing[f] != getattr(body, f)]
    if changed:  # the serial counter runs on: numbers already handed out stay valid
        return f"a SIM product's {', '.join(changed)} cannot change"
    serials = (body.first_serial, body.last_serial)
    iccids = iccid_span(body.iccid_prefix, *serials, body.iccid_length)
    imsis = imsi_span(body.imsi_prefix, *serials)
    for other in others:
        name = f"{other['issuer_id']}/{other['product_id']}"
        span = (other["iccid_prefix"], other["first_serial"], other["last_serial"])
        if spans_overlap(iccids, iccid_span(*span, other["iccid_length"])):
            return f"the ICCID range overlaps SIM product {name}'s"
        if spans_overlap(imsis, imsi_span(other["imsi_prefix"], *span[1:])):
            return f"the IMSI range overlaps SIM product {name}'s"
    return None


def batch_cards(
    common: dict[str, Any],
    product: Mapping[str, Any],
    first: int,
    storage: str,
    secrets: Sequence[SimSecrets],
    credentials: Sequence[SimCredentials],
) -> list[dict[str, Any]]:
    """sim_cards rows of a batch: ICCID and IMSI from the serials, Ki and OPc, the PIN block
    and the OTA keys wrapped twice."""
    ids = [
        (
            make_iccid(product["iccid_prefix"], s, product["iccid_length"]),
            make_imsi(product["imsi_prefix"], s),
        )
        for s in range(first, first + len(secrets))
    ]
    transport = product["transport_key_label"]
    return [
        common
        | {"iccid": iccid, "imsi": imsi, "storage_key_label": storage}
        | {"ki_stored": sec.ki_stored, "opc_stored": sec.opc_stored}
        | {"transport_key_label": transport, "ki_transport": sec.ki_transport}
        | {"opc_transport": sec.opc_transport}
        | credential_columns(cred)
        for (iccid, imsi), sec, cred in zip(ids, secrets, credentials, strict=True)
    ]


def _hex(value: Any) -> str:
    return "-" if value is None else bytes(value).hex().upper()


def output_file(
    batch_id: UUID, batch: Mapping[str, Any], cards: Sequence[Mapping[str, Any]]
) -> str:
    """The operator's output file (docs/sim.md, "The output file", field by field): a header
    naming the batch, the profile and the transport key, then one line per SIM."""
    profile = batch.get("profile") or {}
    profile_text = profile if isinstance(profile, str) else json.dumps(profile, sort_keys=True)
    head = [
        "* cardbureau SIM output file v2",
        f"* issuer: {batch['issuer_id']}  product: {batch['product_id']}  batch: {batch_id}",
        f"* quantity: {batch['count']}",
        f"* profile: {profile_text}",
        f"* transport key: {batch['transport_key_label']}  KCV {batch['transport_kcv']}",
        f"* encryption: {WRAP_NAME} under the transport key, one blob per field",
        f"* PINS: {' '.join(PIN_NAMES)} (8 bytes each, ASCII digits FF-padded) + flags",
        f"* OTA: {' '.join(OTA_NAMES)} (three blobs, '-' when the profile has no OTA)",
        "var_out: ICCID/IMSI/KI/OPC/PINS/OTA",
    ]
    rows = [
        f"{c['iccid']} {c['imsi']} {_hex(c['ki_transport'])} {_hex(c['opc_transport'])}"
        f" {_hex(c.get('pins_transport'))} {_hex(c.get('ota_transport'))}"
        for c in cards
    ]
    return "\n".join(head + rows) + "\n"
