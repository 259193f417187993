"""What a call to keymgmt can end in, besides its answer: one vocabulary for every caller.

- KeymgmtUnavailable: keymgmt did not answer usefully (network, 5xx, our credentials refused).
  A ConnectionError, so an event consumer retries it without limit: an outage delays a card,
  it never loses one.
- KeymgmtRefused: keymgmt answered a 4xx, its verdict on this request; `refusal` is the code of
  the `X-Bureau-Refusal` header when keymgmt sent one (contract.Refusal).
- KeymgmtBadResponse: keymgmt answered, but not with what the contract promises.
"""

from __future__ import annotations

from pydantic import ValidationError

from shared.keymgmt.contract import Refusal


class KeymgmtError(Exception):
    """Base of everything the keymgmt client raises."""


class KeymgmtUnavailable(KeymgmtError, ConnectionError):
    """keymgmt is away or will not let us in: try again later."""


class KeymgmtRefused(KeymgmtError):
    """keymgmt answered a 4xx. The message holds no card data (PANs are redacted)."""

    def __init__(self, path: str, status: int, refusal: Refusal | str | None, detail: str) -> None:
        super().__init__(f"{path} answered {status}: {detail}")
        self.path = path
        self.status = status
        self.refusal = _known(refusal)
        self.detail = detail

    @property
    def not_found(self) -> bool:
        """keymgmt holds no such card (or no such thing at that path)."""
        return self.status == 404


class KeymgmtBadResponse(KeymgmtError):
    """keymgmt answered 2xx with something that is not the contract."""


def _known(code: Refusal | str | None) -> Refusal | str | None:
    """A known refusal code as the enum member; an unknown one stays a string."""
    if code is None or isinstance(code, Refusal):
        return code
    try:
        return Refusal(code)
    except ValueError:
        return code


def field_problems(exc: ValidationError) -> str:
    """Which fields are wrong, without their values: they may be cardholder data."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
        for err in exc.errors(include_input=False)[:5]
    )
