"""Dual control between two authenticated principals (shared/dual_control.py): the second step
by the principal of the first is refused, whatever case the registry spelled the name in."""

from __future__ import annotations

import pytest

from shared.auth import Principal, StaticTokens
from shared.dual_control import (
    SAME_PRINCIPAL_TWICE,
    SamePrincipalTwice,
    principal_id,
    second_principal,
)


def test_a_second_operator_completes_the_act() -> None:
    oscar = Principal("operator", "oscar")
    assert second_principal("operator:olga", oscar, "destroying cards") == "operator:oscar"


@pytest.mark.parametrize("first", ["operator:olga", "OPERATOR:Olga", " operator:olga "])
def test_the_first_principal_cannot_complete_their_own_act(first: str) -> None:
    with pytest.raises(SamePrincipalTwice, match="two different people") as refused:
        second_principal(first, Principal("operator", "olga"), "destroying cards")
    assert refused.value.status_code == 403
    assert refused.value.refusal == SAME_PRINCIPAL_TWICE


async def test_a_typed_name_is_not_a_principal_only_the_token_is() -> None:
    """'Alice' and 'alice' typed by one operator were two witnesses; a token is one person."""
    registry = StaticTokens("operator:olga=t-olga,operator:oscar=t-oscar")
    olga, oscar = await registry("t-olga"), await registry("t-oscar")
    assert olga is not None
    assert oscar is not None
    with pytest.raises(SamePrincipalTwice):
        second_principal(principal_id(olga), olga, "destroying stock")
    assert second_principal(principal_id(olga), oscar, "destroying stock") == "operator:oscar"
