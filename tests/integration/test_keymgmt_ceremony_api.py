"""Key ceremonies through keymgmt's HTTP API on the real stack: components from distinct
authenticated custodians, the same custodian twice refused, a wrong KCV refused, an abort
recorded, and bureau keys generated inside the HSM."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from services.keymgmt.hsm.session import Hsm, describe_key
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


def component(part: bytes) -> dict[str, str]:
    return {"component": part.hex(), "kcv": soft_des_kcv(part)}


@pytest.fixture
def settings(settings: KeymgmtSettings, unique: str) -> KeymgmtSettings:
    """Two more custodians than the registered settings name, for the ceremonies here."""
    more = f",custodian:dave=cd-{unique},custodian:erin=ce-{unique}"
    return settings.model_copy(update={"principals": settings.principals + more})


async def test_ceremony_api_dual_control_refusals_abort_and_generated_keys(
    unique: str,
    keymgmt: tuple[ServiceRuntime, httpx.AsyncClient],
    keymgmt_hsm: Hsm,
) -> None:
    _, http = keymgmt
    issuer = f"ia{unique}"
    carol, dave, root = auth(f"cu-{unique}"), auth(f"cd-{unique}"), auth(f"ad-{unique}")
    spec: dict[str, Any] = {
        "issuer_id": issuer,
        "usage_name": "IMK-AC",
        "key_type": "DES2",
        "usage": "derive",
        "components": 2,
        "expected_kcv": soft_des_kcv(KEY),
    }

    async def open_one() -> str:
        opened = await http.post("/v1/ceremonies", json=spec, headers=root)
        assert opened.status_code == 200, opened.text
        return str(opened.json()["ceremony_id"])

    issuer_refused = await http.post("/v1/ceremonies", json=spec, headers=auth(f"ia-{unique}"))
    assert issuer_refused.status_code == 403

    twice = await open_one()
    first = await http.post(
        f"/v1/ceremonies/{twice}/components", json=component(PART1), headers=carol
    )
    assert first.json() == {"ceremony_id": twice, "state": "open", "received": 1}
    again = await http.post(
        f"/v1/ceremonies/{twice}/components", json=component(PART2), headers=carol
    )
    assert again.status_code == 409
    assert "already entered a component" in again.text

    wrong = await open_one()
    bad = component(PART1) | {"kcv": "000000"}
    refused = await http.post(f"/v1/ceremonies/{wrong}/components", json=bad, headers=carol)
    assert refused.status_code == 409
    assert "KCV" in refused.text

    aborted = await open_one()
    await http.post(f"/v1/ceremonies/{aborted}/components", json=component(PART1), headers=carol)
    admin_component = await http.post(
        f"/v1/ceremonies/{aborted}/components", json=component(PART2), headers=root
    )
    assert admin_component.status_code == 403  # only custodians hold components
    stop = await http.post(f"/v1/ceremonies/{aborted}/abort", headers=root)
    assert stop.json()["state"] == "refused"
    gone = await http.post(
        f"/v1/ceremonies/{aborted}/components", json=component(PART2), headers=dave
    )
    assert gone.status_code == 404

    label = f"{issuer}/IMK-AC/1"
    assert (await http.get(f"/v1/keys/{label}", headers=root)).status_code == 404
    done = await open_one()
    await http.post(f"/v1/ceremonies/{done}/components", json=component(PART1), headers=carol)
    last = await http.post(f"/v1/ceremonies/{done}/components", json=component(PART2), headers=dave)
    assert last.status_code == 200, last.text
    assert last.json()["kcvs"][0]["kcv"] == soft_des_kcv(KEY)
    assert last.json()["custodians"] == ["custodian:carol", "custodian:dave"]
    key = (await http.get(f"/v1/keys/{label}", headers=root)).json()
    assert (key["origin"], key["custodians"]) == ("ceremony", ["custodian:carol", "custodian:dave"])

    records = (await http.get("/v1/ceremonies", params={"label": label}, headers=root)).json()
    outcomes = [(c["outcome"], c["reason"] or "") for c in records["ceremonies"]]
    assert [o for o, _ in outcomes] == ["refused", "refused", "refused", "completed"]
    assert "aborted by admin:root" in outcomes[2][1]
    steps = [s["step"] for s in records["ceremonies"][3]["steps"]]
    assert steps == ["open", "component 1", "component 2", "combine"]

    made = await http.post(
        "/v1/bureau-keys", json={"owner": f"b{unique}", "kind": "TRANSPORT"}, headers=carol
    )
    assert made.status_code == 200, made.text
    assert (made.json()["usage"], made.json()["origin"]) == ("wrap", "generated")
    info = await keymgmt_hsm.call(describe_key, made.json()["label"])
    assert info.sensitive
    assert not info.extractable
    clash = await http.post(
        "/v1/bureau-keys", json={"owner": f"b{unique}", "kind": "TRANSPORT"}, headers=carol
    )
    assert clash.status_code == 409
