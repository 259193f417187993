"""Station planning (issue 15, docs/keymgmt.md "Station planning"): the rules. A batch is
assigned, off the floor, to the encoding stations that may personalise it; keymgmt gives the
script of a card no station has bound yet only to one of them. A card already bound stays with
its station whatever the batch's assignment says (the binding rule, service.other_station).
No database and no HTTP here: planning.py and api.py pass what they read."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from shared.events.lifecycle import MAX_BATCH_STATIONS, STATION_NAME_PATTERN

_STATION = re.compile(STATION_NAME_PATTERN)


def checked_stations(names: Iterable[str], what: str) -> list[str]:
    """The station ids, each well formed and named once; ValueError names what is wrong."""
    stations = list(names)
    for name in stations:
        if not _STATION.fullmatch(name):
            raise ValueError(
                f"{what}: {name!r} is not a station id (a letter or digit, then letters,"
                " digits, '.', '_' or '-', at most 64)"
            )
    twice = sorted({name for name in stations if stations.count(name) > 1})
    if twice:
        raise ValueError(f"{what}: station {twice[0]} is named twice")
    if len(stations) > MAX_BATCH_STATIONS:
        raise ValueError(f"{what}: {len(stations)} stations, at most {MAX_BATCH_STATIONS}")
    return stations


def station_names(setting: str) -> list[str]:
    """BUREAU_PERSO_STATIONS: comma separated station ids; empty: none."""
    names = [name.strip() for name in setting.split(",") if name.strip()]
    return checked_stations(names, "perso_stations")


def assignment_problem(
    assignment: Mapping[str, Any] | None, bound: Mapping[str, Any] | None, station: str
) -> str | None:
    """Why `station` (its token's) may not have the script of a card whose batch has this
    assignment, or None. A bound card is the binding rule's (service.other_station)."""
    if bound is not None:
        return None
    if assignment is None:
        return "the card's batch is not assigned to any station yet (a planner assigns it)"
    if assignment["any_station"]:  # prepared before station planning (migration 0115)
        return None
    stations = list(assignment["stations"])
    if station in stations:
        return None
    if not stations:
        return "the card's batch is parked: assigned to no station"
    return f"the card's batch is assigned to station {', '.join(stations)}, not to {station}"
