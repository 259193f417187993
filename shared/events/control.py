"""The steps of acts under dual control (issue 15), for audit's log: who asked, who confirmed,
who was refused, for what. One contract, `control.recorded`, one event per step, written through
the outbox in the same transaction as the step's own row (a request, a refusal, a ceremony
step), so a step is on record in its service exactly when audit will log it.

Each act has one producing service (ACT_PRODUCERS, checked by shared/events/producers.py): a
card destruction is fulfillment's, a blank-stock destruction intake's, a key ceremony keymgmt's.
A ceremony step names its custodian and the key check value, never key material: the only
key-derived field is `kcv`, 3 bytes of hex by its pattern.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal
from uuid import UUID

from pydantic import Field

from shared.events.base import Event

ControlAct = Literal["card-destruction", "stock-destruction", "key-ceremony"]

# The one service that produces the steps of each act.
ACT_PRODUCERS: Final[Mapping[str, str]] = {
    "card-destruction": "fulfillment",
    "stock-destruction": "intake",
    "key-ceremony": "keymgmt",
}


class ControlRecorded(Event):
    """One step of an act under dual control. `principal` took the step (`role:name` of their
    own token; None for the service's own steps: a ceremony combining its components, expiring);
    `started_by` took the act's first step (asked for the destruction, opened the ceremony), so
    one entry names both people of a confirmation or of a refused one."""

    type: Literal["control.recorded"] = "control.recorded"
    act: ControlAct
    subject_id: UUID = Field(description="the request's or the ceremony's id")
    subject: str = Field(min_length=1, max_length=300, description="what the act is about")
    step: str = Field(min_length=1, max_length=40, description="requested, confirmed, component 2")
    outcome: Literal["ok", "refused"]
    principal: str | None = Field(default=None, max_length=128)
    started_by: str | None = Field(default=None, max_length=128)
    reason: str | None = Field(default=None, max_length=500)
    kcv: str | None = Field(default=None, pattern=r"^[0-9A-F]{6}$")
    # This step ended the act: confirmed it, completed or refused the ceremony as a whole. A
    # refused step that is not final leaves the act waiting (for another operator, for the
    # custodian the ceremony named).
    final: bool = False

    def partition_key(self) -> str:
        """One act's steps stay in order: keyed by its request or ceremony."""
        return str(self.subject_id)
