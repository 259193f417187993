"""Intake's domain rules: validating an order card by card (no I/O here)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from services.intake.schemas import CardRequest, LineError, OrderRequest, PlannedBatch
from shared.pan import luhn_valid

# Characters an embosser or laser engraver prints on a payment card's name line (ISO 7811 /
# track 1 name field): upper-case Latin letters, digits, space and a little punctuation.
EMBOSSABLE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .-'/")
MAX_NAME = 26


def validate_card(line: int, card: CardRequest, today: date) -> list[LineError]:
    errors: list[LineError] = []

    def problem(field: str, text: str) -> None:
        errors.append(LineError(line=line, field=field, problem=text))

    if not card.pan.isdigit() or not 13 <= len(card.pan) <= 19:
        problem("pan", "must be 13 to 19 digits")
    elif not luhn_valid(card.pan):
        problem("pan", "fails the Luhn check")
    if len(card.psn) != 2 or not card.psn.isdigit():
        problem("psn", "must be 2 digits")
    if len(card.expiry) != 4 or not card.expiry.isdigit():
        problem("expiry", "must be YYMM")
    else:
        year, month = 2000 + int(card.expiry[:2]), int(card.expiry[2:])
        if not 1 <= month <= 12:
            problem("expiry", "month must be 01 to 12")
        elif (year, month) <= (today.year, today.month):
            problem("expiry", "must be in the future")
    name = card.cardholder_name
    if not name.strip():
        problem("cardholder_name", "must not be empty")
    elif len(name) > MAX_NAME:
        problem("cardholder_name", f"has {len(name)} characters; at most {MAX_NAME}")
    else:
        bad = sorted(set(name) - EMBOSSABLE)
        if bad:
            problem("cardholder_name", f"has characters that cannot be embossed: {''.join(bad)!r}")
    return errors


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
