"""Dual control in key ceremonies through the API, on the real stack (Postgres, SoftHSM): each
component is submitted with its custodian's own token; the same custodian twice refuses the
ceremony; a custodian's token at a step the ceremony named for another custodian is refused and
recorded while the ceremony waits for the named one; every step is on record."""

from __future__ import annotations

from typing import Any

import pytest

from services.keymgmt.hsm.session import Hsm
from services.keymgmt.settings import KeymgmtSettings
from shared.service import ServiceRuntime
from tests.support.hsm import soft_des_kcv
from tests.support.keymgmt import auth

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PART1 = bytes.fromhex("1F1F1F1F0E0E0E0E0101010101010101")
PART2 = bytes(a ^ b for a, b in zip(KEY, PART1, strict=True))


def ceremony(issuer: str, **more: Any) -> dict[str, Any]:
    return {
        "issuer_id": issuer,
        "usage_name": "IMK-AC",
        "key_type": "DES2",
        "usage": "derive",
        "components": 2,
        "expected_kcv": "08D7B4",
    } | more


def component(part: bytes) -> dict[str, str]:
    return {"component": part.hex(), "kcv": soft_des_kcv(part)}  # clear: dev/test only


async def test_each_step_is_its_custodians_own_and_one_custodian_cannot_act_twice(
    settings: KeymgmtSettings,
    unique: str,
    keymgmt: tuple[ServiceRuntime, Any],
    keymgmt_hsm: Hsm,
) -> None:
    _, http = keymgmt
    carol, cyril, cleo = auth(f"cu-{unique}"), auth(f"cu2-{unique}"), auth(f"cu3-{unique}")
    root = auth(f"ad-{unique}")
    issuer = f"dc{unique}"

    # The same custodian's token twice: the ceremony is refused, no key.
    opened = await http.post("/v1/ceremonies", json=ceremony(issuer), headers=root)
    url = f"/v1/ceremonies/{opened.json()['ceremony_id']}/components"
    assert (await http.post(url, json=component(PART1), headers=carol)).status_code == 200
    twice = await http.post(url, json=component(PART2), headers=carol)
    assert twice.status_code == 409, twice.text
    assert twice.headers["x-bureau-refusal"] == "same-principal-twice"
    assert "custodian:carol already entered a component" in twice.json()["detail"]
    assert (await http.get(f"/v1/keys/{issuer}/IMK-AC/1", headers=root)).status_code == 404
    assert (await http.post(url, json=component(PART2), headers=cyril)).status_code == 404

    # Named custodians: a typed name in the body is no credential (extra fields refused).
    named = ceremony(issuer, custodians=["cyril", "carol"])
    assert (await http.post("/v1/ceremonies", json=ceremony(issuer, custodians=["cyril"]),
                            headers=root)).status_code == 422  # fmt: skip
    opened = await http.post("/v1/ceremonies", json=named, headers=root)
    assert opened.status_code == 200, opened.text
    url = f"/v1/ceremonies/{opened.json()['ceremony_id']}/components"
    typed = component(PART1) | {"custodian": "cyril"}
    assert (await http.post(url, json=typed, headers=cleo)).status_code == 422
    # Another custodian's token at cyril's step, then carol's (named, but for step 2).
    for intruder in (cleo, carol):
        refused = await http.post(url, json=component(PART1), headers=intruder)
        assert refused.status_code == 403, refused.text
        assert refused.headers["x-bureau-refusal"] == "not-your-component"
        assert "component 1 is custodian:cyril's step" in refused.json()["detail"]
    assert (await http.post(url, json=component(PART1), headers=cyril)).json()["received"] == 1
    done = await http.post(url, json=component(PART2), headers=carol)
    assert done.status_code == 200, done.text
    assert done.json()["custodians"] == ["custodian:cyril", "custodian:carol"]

    history = await http.get(f"/v1/ceremonies?label={issuer}/IMK-AC/1", headers=root)
    first, second = history.json()["ceremonies"]
    assert (first["outcome"], first["steps"][-1]["custodian"]) == ("refused", "custodian:carol")
    steps = [(s["step"], s["custodian"], s["outcome"]) for s in second["steps"]]
    assert steps == [
        ("open", None, "ok"),
        ("component 1", "custodian:cleo", "refused"),
        ("component 1", "custodian:carol", "refused"),
        ("component 1", "custodian:cyril", "ok"),
        ("component 2", "custodian:carol", "ok"),
        ("combine", None, "ok"),
    ]
    assert "custodians custodian:cyril, custodian:carol" in second["steps"][0]["detail"]
    assert await keymgmt_hsm.call(Hsm.find_key, f"{issuer}/IMK-AC/1") is not None
