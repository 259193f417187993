"""The rules for a card's fields, written once: intake checks every order with them (422 naming
the card and the field) and the vault's request model (shared/keymgmt/contract.py) refuses with
the very same rules, so nothing intake accepts can be refused by the vault afterwards.

The problems name the field and the rule, never the value (the value may be a PAN or a name).
Intake adds rules of its own on top (an expiry in the future, no PAN twice in an order); the
vault, which may store a card later than it was ordered, does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.pan import luhn_valid

# Characters an embosser or laser engraver prints on a payment card's name line (ISO/IEC 7811
# embossing, and the track 1 name field of ISO/IEC 7813): upper-case Latin letters, digits,
# space and a little punctuation.
EMBOSSABLE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .-'/")
NAME_MIN, NAME_MAX = 2, 26  # ISO/IEC 7813 track 1 name: 2 to 26 characters
PAN_MIN, PAN_MAX = 13, 19  # ISO/IEC 7812-1
ADDRESS_LINES_MAX, ADDRESS_LINE_MAX = 4, 64
POSTCODE_MAX, CITY_MAX = 16, 64
UPPER_ASCII = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")

Problem = tuple[str, str]  # (field, what is wrong), e.g. ("address.country", "...")


def pan_problems(pan: str) -> list[Problem]:
    if not pan.isdigit() or not PAN_MIN <= len(pan) <= PAN_MAX:
        return [("pan", f"must be {PAN_MIN} to {PAN_MAX} digits")]
    if not luhn_valid(pan):
        return [("pan", "fails the Luhn check")]
    return []


def psn_problems(psn: str) -> list[Problem]:
    return [] if len(psn) == 2 and psn.isdigit() else [("psn", "must be 2 digits")]


def expiry_problems(expiry: str) -> list[Problem]:
    if len(expiry) != 4 or not expiry.isdigit():
        return [("expiry", "must be YYMM")]
    if not 1 <= int(expiry[2:]) <= 12:
        return [("expiry", "month must be 01 to 12")]
    return []


def name_problems(name: str) -> list[Problem]:
    if not name.strip():
        return [("cardholder_name", "must not be empty")]
    if not NAME_MIN <= len(name) <= NAME_MAX:
        return [
            ("cardholder_name", f"has {len(name)} characters; {NAME_MIN} to {NAME_MAX} allowed")
        ]
    bad = sorted(set(name) - EMBOSSABLE)
    if bad:
        return [("cardholder_name", f"has characters that cannot be embossed: {''.join(bad)!r}")]
    return []


def address_problems(address: Mapping[str, Any]) -> list[Problem]:
    found: list[Problem] = []
    lines: Sequence[Any] = address.get("lines") or []
    if not 1 <= len(lines) <= ADDRESS_LINES_MAX:
        found.append(("address.lines", f"must be 1 to {ADDRESS_LINES_MAX} lines"))
    for index, line in enumerate(lines[:ADDRESS_LINES_MAX]):
        if not isinstance(line, str) or not line.strip() or len(line) > ADDRESS_LINE_MAX:
            found.append((f"address.lines.{index}", f"must be 1 to {ADDRESS_LINE_MAX} characters"))
    postcode, city = address.get("postcode", ""), address.get("city", "")
    if not isinstance(postcode, str) or len(postcode) > POSTCODE_MAX:
        found.append(("address.postcode", f"must be at most {POSTCODE_MAX} characters"))
    if not isinstance(city, str) or not city.strip() or len(city) > CITY_MAX:
        found.append(("address.city", f"must be 1 to {CITY_MAX} characters"))
    country = address.get("country", "")
    if not (isinstance(country, str) and len(country) == 2 and set(country) <= UPPER_ASCII):
        found.append(("address.country", "must be an ISO 3166-1 alpha-2 code in capitals"))
    return found


def card_problems(
    *, pan: str, psn: str, expiry: str, cardholder_name: str, address: Mapping[str, Any]
) -> list[Problem]:
    """Every problem with a card's fields, by field; empty when the vault takes the card."""
    return [
        *pan_problems(pan),
        *psn_problems(psn),
        *expiry_problems(expiry),
        *name_problems(cardholder_name),
        *address_problems(address),
    ]
