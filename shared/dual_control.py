"""Dual control between two people (PCI Card Production, Logical Security 5-6; issue 15): an act
that needs two people is started by one authenticated principal and completed by a second,
different one. A principal is who its own bearer token names (`role:name` from the registry,
shared/auth.py), never a name someone typed, so "Alice" and "alice" typed by one operator are
one person, and two tokens of the registry are two people."""

from __future__ import annotations

from typing import ClassVar

from shared.auth import Principal
from shared.errors import Forbidden

SAME_PRINCIPAL_TWICE = "same-principal-twice"


class SamePrincipalTwice(Forbidden):
    """The second step of a dual-control act by the principal who took the first (403)."""

    refusal: ClassVar[str | None] = SAME_PRINCIPAL_TWICE


def principal_id(who: Principal) -> str:
    """How records and events name a principal: `role:name` (issuer principals add nothing:
    they never take part in dual control)."""
    return f"{who.role}:{who.name}"


def same_principal(first: str, second: str) -> bool:
    """Registry names differ only by case at most by mistake: treat them as one person."""
    return first.strip().casefold() == second.strip().casefold()


def second_principal(first: str, second: Principal, act: str) -> str:
    """The id of `second`, who completes `act` that `first` started; SamePrincipalTwice when
    they are one person."""
    second_id = principal_id(second)
    if same_principal(first, second_id):
        raise SamePrincipalTwice(
            f"{act} needs two different people: {second_id} already took the first step"
        )
    return second_id
