"""Fulfillment rules: pure domain, no I/O (DOMAIN.md, fulfillment and counting).

A card that passed QA is matched to a carrier and packed; a rejected or spoiled card waits for
destruction under dual control (one operator requests it, a second confirms it:
shared/dual_control.py); a batch's packed cards are dispatched only after audit reconciles the
batch. Manifests carry card and carrier ids only: never a PAN, never an address.
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Literal
from uuid import UUID

from shared.errors import Invalid
from shared.pan import luhn_valid

CardState = Literal["packed", "awaiting_destruction", "destroyed", "dispatched"]
FINAL_STATES: frozenset[str] = frozenset({"destroyed", "dispatched"})
_NAMESPACE = uuid.UUID("0c4f6a8e-3f61-4e0a-9a53-7d1e2b6f0f01")


def carrier_id_for(card_id: UUID) -> str:
    """The barcode value printed on the card's carrier letter. Derived from the card id, so a
    retried packing yields the same carrier; groups of four keep it readable when keyed in."""
    digest = uuid.uuid5(_NAMESPACE, f"carrier/{card_id}").hex[:16].upper()
    return "CR-" + "-".join(digest[i : i + 4] for i in range(0, 16, 4))


def state_after_packing(current: CardState | None) -> CardState | None:
    """card.qa_passed: a card seen for the first time is packed; anything else stays as it is
    (a rejected card is never packed again). None means no change."""
    return "packed" if current is None else None


def state_after_rejection(current: CardState | None) -> CardState | None:
    """card.qa_failed / card.spoiled: the card waits for destruction, even if it was packed
    (it is pulled from its carrier). Dispatched and destroyed cards are beyond reach."""
    if current is None or current == "packed":
        return "awaiting_destruction"
    return None


class DestructionRefused(Invalid):
    """A destruction request that breaks a rule; nothing is destroyed (422, every problem)."""

    conflict: ClassVar[bool] = False

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(list(problems))
        self.problems = list(problems)

    def __str__(self) -> str:
        return "; ".join(self.problems)


class DestructionConflict(DestructionRefused):
    """Refused for the cards' state, not the request's shape (409)."""

    status_code = 409
    conflict = True


def check_destruction(card_ids: Sequence[UUID], states: Mapping[UUID, CardState]) -> list[UUID]:
    """All or nothing: every card named must be awaiting destruction, each named once."""
    if not card_ids:
        raise DestructionRefused(["no cards named"])
    duplicates = sorted(str(c) for c, n in Counter(card_ids).items() if n > 1)
    if duplicates:
        raise DestructionRefused([f"card named twice: {c}" for c in duplicates])
    problems = []
    for card_id in card_ids:
        state = states.get(card_id)
        if state != "awaiting_destruction":
            problems.append(
                f"card {card_id} is {state or 'unknown here'}, not awaiting destruction"
            )
    if problems:
        raise DestructionConflict(problems)
    return list(card_ids)


@dataclass(frozen=True)
class ManifestItem:
    card_id: UUID
    carrier_id: str


@dataclass(frozen=True)
class Manifest:
    shipment_id: UUID
    batch_id: UUID
    issuer_id: str
    kind: Literal["cards", "pin_mailers"]
    courier: str
    created_at: datetime
    items: tuple[ManifestItem, ...]

    @property
    def card_ids(self) -> list[UUID]:
        return [item.card_id for item in self.items]


def build_manifest(
    *,
    batch_id: UUID,
    issuer_id: str,
    courier: str,
    created_at: datetime,
    items: Sequence[ManifestItem],
    kind: Literal["cards", "pin_mailers"] = "cards",
) -> Manifest:
    """One shipment. Its id follows from its content, so a retry builds the same shipment."""
    if not items:
        raise ValueError("a shipment needs at least one item")
    ordered = tuple(sorted(items, key=lambda item: item.carrier_id))
    key = f"{batch_id}/{kind}/" + ",".join(str(item.card_id) for item in ordered)
    return Manifest(
        shipment_id=uuid.uuid5(_NAMESPACE, key),
        batch_id=batch_id,
        issuer_id=issuer_id,
        kind=kind,
        courier=courier,
        created_at=created_at,
        items=ordered,
    )


def manifest_json(manifest: Manifest) -> bytes:
    document = {
        "shipment_id": str(manifest.shipment_id),
        "batch_id": str(manifest.batch_id),
        "issuer_id": manifest.issuer_id,
        "kind": manifest.kind,
        "courier": manifest.courier,
        "created_at": manifest.created_at.isoformat(),
        "count": len(manifest.items),
        "items": [
            {"sequence": n, "card_id": str(item.card_id), "carrier_id": item.carrier_id}
            for n, item in enumerate(manifest.items, start=1)
        ],
    }
    return refuse_clear_pans(json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def manifest_csv(manifest: Manifest) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["shipment_id", "batch_id", "courier", "sequence", "card_id", "carrier_id"])
    for n, item in enumerate(manifest.items, start=1):
        writer.writerow(
            [
                manifest.shipment_id,
                manifest.batch_id,
                manifest.courier,
                n,
                item.card_id,
                item.carrier_id,
            ]
        )
    return refuse_clear_pans(out.getvalue()).encode()


_DIGIT_RUN = re.compile(r"(?<!\d)\d{13,19}(?!\d)")


def refuse_clear_pans(text: str) -> str:
    """Defence in depth: a document going to a courier holds no run of 13-19 digits that
    passes Luhn. Ids here are UUIDs and dashed carrier codes, so a hit is a real leak."""
    for match in _DIGIT_RUN.finditer(text):
        if luhn_valid(match.group(0)):
            raise ValueError("a document meant for the courier contains what looks like a PAN")
    return text
