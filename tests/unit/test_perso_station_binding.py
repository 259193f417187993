"""Station binding rules of keymgmt's perso door (services/keymgmt/perso/service.py): a card bound
at one station is another station's no more; a chip binds one card, a card one chip."""

from __future__ import annotations

import uuid

from services.keymgmt.perso.service import binding_problem, other_station

BOUND = {"card_id": uuid.uuid4(), "chip_serial": "4790512300001234", "station": "station-a"}


def test_an_unbound_card_is_no_other_stations() -> None:
    assert other_station(None, "station-b") is None


def test_the_binding_station_keeps_its_card() -> None:
    assert other_station(BOUND, "station-a") is None


def test_another_station_is_named_whatever_chip_it_brings() -> None:
    assert other_station(BOUND, "station-b") == "station-a"


def test_a_chip_binds_one_card_and_a_card_one_chip() -> None:
    assert binding_problem(BOUND, "4790512300001234", None) is None
    assert binding_problem(BOUND, "4790512300009999", None) == (
        "the card is already bound to another chip"
    )
    assert binding_problem(None, "4790512300001234", uuid.uuid4()) == (
        "this chip is already bound to another card"
    )
