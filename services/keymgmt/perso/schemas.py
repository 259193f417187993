"""The station's perso request (docs/perso-protocol.md) and its refusals. The request and the
two refusal codes the station must tell from the others (X-Bureau-Refusal: the chip is
rejected, not kept for another card) are keymgmt's contract, shared/keymgmt/contract.py, which
the station imports too."""

from __future__ import annotations

from shared.errors import Conflict, Forbidden, Invalid, NotFound
from shared.keymgmt.contract import Refusal, SecureScriptRequest

__all__ = [
    "CardAtAnotherStation",
    "CardCancelledByIssuer",
    "CardCryptogramRefused",
    "CardNotForThisStation",
    "CardNotVaulted",
    "PersoRefused",
    "SecureScriptRequest",
    "UnusableAnswer",
]


class UnusableAnswer(Invalid):
    """The INITIALIZE UPDATE answer or a script command cannot be used."""


class CardCancelledByIssuer(Conflict):
    refusal = Refusal.CARD_CANCELLED  # the issuer cancelled the card: no script


class CardCryptogramRefused(Conflict):
    """The card did not prove it holds this bureau's keys: spoil it, eject the chip."""

    refusal = Refusal.CARD_CRYPTOGRAM_MISMATCH


class CardAtAnotherStation(Forbidden):
    """Station binding (issue 15): the card is bound to a chip at another station; keymgmt
    gives its script to that station only. The refusal is recorded (vault_access)."""

    refusal = "card-at-another-station"


class CardNotForThisStation(Forbidden):
    """Station planning (issue 15): no station has bound the card and its batch is not
    assigned to the asking station. The station releases the card; the refusal is recorded."""

    refusal = Refusal.CARD_NOT_FOR_THIS_STATION


class CardNotVaulted(NotFound):
    pass


class PersoRefused(Conflict):
    """Not prepared, bound to another chip, keys not active or changed since preparation."""
