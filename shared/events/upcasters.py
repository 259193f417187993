"""Upcasters: an older version of an event contract, as stored in Kafka or an outbox, turned into
the current version before decoding (CONVENTIONS.md 2: a version bump ships its upcaster).
Each takes the decoded JSON object of version v and returns version v + 1."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def card_prepared_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v1 carried `dgis`, a constant list of the DGIs the script would hold; v2 says which
    application the station writes instead (the script is built at perso time)."""
    out = {k: v for k, v in data.items() if k != "dgis"}
    out["version"] = 2
    out["application"] = "usim" if data.get("key_scheme") == "MILENAGE" else "emv"
    return out


UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("card.prepared", 1): card_prepared_v1_to_v2,
}
OLD_VERSIONS = tuple(UPCASTERS)


def upcast(data: Any) -> Any:
    """The current version of a decoded event object (anything else is returned as it is, for
    the validator to refuse with its own words)."""
    while isinstance(data, dict):
        step = UPCASTERS.get((data.get("type"), data.get("version", 1)))  # type: ignore[arg-type]
        if step is None:
            break
        data = step(data)
    return data
