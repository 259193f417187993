"""The vault endpoints' request models (the cardholder record as intake sends it: keymgmt's
contract, shared/keymgmt/contract.py, which intake imports too), and their refusals."""

from __future__ import annotations

from shared.errors import Conflict, Invalid, NotFound
from shared.keymgmt.contract import (
    Address,
    VaultCardIn,
    VaultForget,
    VaultForgotten,
    VaultStore,
)

__all__ = [
    "Address",
    "DuplicateCard",
    "NotInVault",
    "VaultCardIn",
    "VaultForget",
    "VaultForgotten",
    "VaultStore",
    "VaultedWithOtherData",
]


class DuplicateCard(Invalid):
    pass


class VaultedWithOtherData(Conflict):
    pass


class NotInVault(NotFound):
    pass
