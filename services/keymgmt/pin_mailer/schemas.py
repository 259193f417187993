"""Request and response models of the PIN mailer endpoints, and their refusals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.errors import Conflict, Forbidden, NotFound, Unavailable
from shared.keymgmt.contract import PinMailerRequest

# The request is keymgmt's contract (shared/keymgmt/contract.py), as fulfillment sends it.
__all__ = [
    "NoPinMailer",
    "NotFulfillment",
    "PinMailerRequest",
    "PinNotRevealable",
    "PinPrinterUnavailable",
    "mailer_view",
]


def mailer_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """What fulfillment sees of a mailer: its state, never the PIN."""
    return {
        "mailer_id": str(row["mailer_id"]),
        "card_id": str(row["card_id"]),
        "status": row["status"],
        "ipp_job_id": row["ipp_job_id"],
        "attempts": row["attempts"],
        "last_problem": row["last_problem"],
    }


class NotFulfillment(Forbidden):
    pass


class NoPinMailer(NotFound):
    pass


class PinNotRevealable(Conflict):
    """The PIN block cannot be read back for a mailer (the message says why, never a value)."""


class PinPrinterUnavailable(Unavailable):
    pass
