"""Intake's domain rules: validating an order card by card (no I/O here)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from services.intake.schemas import CardRequest, LineError, OrderRequest, PlannedBatch
from shared.cardholder import card_problems


def validate_card(line: int, card: CardRequest, today: date) -> list[LineError]:
    """The card's fields by the rules the vault applies too (shared/cardholder.py), and
    intake's own: a card ordered today must not have expired."""
    found = card_problems(
        pan=card.pan,
        psn=card.psn,
        expiry=card.expiry,
        cardholder_name=card.cardholder_name,
        address=card.address.model_dump(),
    )
    if not any(field == "expiry" for field, _ in found):
        year, month = 2000 + int(card.expiry[:2]), int(card.expiry[2:])
        if (year, month) <= (today.year, today.month):
            found.append(("expiry", "must be in the future"))
    return [LineError(line=line, field=field, problem=text) for field, text in found]


def validate_order(order: OrderRequest, today: date, max_cards: int) -> list[LineError]:
    errors: list[LineError] = []
    if len(order.cards) > max_cards:
        errors.append(LineError(line=0, field="cards", problem=f"more than {max_cards} cards"))
    seen: dict[tuple[str, str], int] = {}
    for line, card in enumerate(order.cards, start=1):
        errors.extend(validate_card(line, card, today))
        first = seen.setdefault((card.pan, card.psn), line)
        if first != line:
            errors.append(
                LineError(line=line, field="pan", problem=f"same PAN and PSN as line {first}")
            )
    return errors


def request_mac(secret: str, issuer_id: str, order: OrderRequest) -> str:
    """Recognises a replayed body without storing it: HMAC, since the body holds PANs."""
    canonical = json.dumps(order.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hmac.new(
        secret.encode(), f"{issuer_id}\n{canonical}".encode(), hashlib.sha256
    ).hexdigest()


def plan_batches(waiting: Iterable[Mapping[str, Any]], max_cards: int) -> list[PlannedBatch]:
    """Group orders (issuer, product, priority, order_id, waiting cards; sorted by issuer,
    product, priority descending, age) into production runs: one product per run, higher
    priority first, a run closed when the next order would pass `max_cards` (an order is never
    split; an order larger than `max_cards` is a run of its own)."""
    runs: list[PlannedBatch] = []
    for row in waiting:
        last = runs[-1] if runs else None
        fits = (
            last is not None
            and (last.issuer_id, last.product_id) == (row["issuer_id"], row["product_id"])
            and last.card_count + int(row["waiting"]) <= max_cards
        )
        if last is not None and fits:
            last.card_count += int(row["waiting"])
            last.orders.append(row["order_id"])
            continue
        runs.append(
            PlannedBatch(
                issuer_id=row["issuer_id"],
                product_id=row["product_id"],
                priority=int(row["priority"]),
                card_count=int(row["waiting"]),
                orders=[row["order_id"]],
            )
        )
    return sorted(runs, key=lambda r: -r.priority)
