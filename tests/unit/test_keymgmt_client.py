"""The one keymgmt client against httpx's MockTransport: its retry policy, the mapping of
keymgmt's answers to one error vocabulary (each refusal code included), and the wire format of
every endpoint a service calls (shared/keymgmt/contract.py)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from shared.keymgmt import contract as c
from shared.keymgmt.client import KeymgmtClient, RetryPolicy, status_error
from shared.keymgmt.errors import (
    KeymgmtBadResponse,
    KeymgmtRefused,
    KeymgmtUnavailable,
)

CARD = uuid.uuid4()
PAN = "4761739001010010"


class Keymgmt:
    """A fake keymgmt: answers in order (the last one again when they run out)."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.seen: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def client(self, policy: RetryPolicy | None = None, draw: float = 0.0) -> KeymgmtClient:
        async def sleep(delay: float) -> None:
            self.sleeps.append(delay)

        return KeymgmtClient(
            "http://keymgmt",
            "svc-token",
            policy=policy,
            transport=httpx.MockTransport(self),
            sleep=sleep,
            draw=lambda: draw,
        )

    def body(self, n: int = -1) -> Any:
        return json.loads(self.seen[n].content)


# -- the retry policy ---------------------------------------------------------------------------
def test_backoff_doubles_up_to_its_cap_less_its_jitter() -> None:
    policy = RetryPolicy(backoff_s=0.1, backoff_max_s=0.5, jitter=0.2)
    assert [policy.delay_s(n, 0.0) for n in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert policy.delay_s(4, 1.0) == pytest.approx(0.4)  # at most `jitter` of it taken off
    assert policy.delay_s(10_000, 0.5) == pytest.approx(0.45)  # no overflow after long outages


async def test_a_bounded_policy_gives_up_as_unavailable() -> None:
    keymgmt = Keymgmt(httpx.Response(503))
    with pytest.raises(KeymgmtUnavailable, match="failed 3 times: .*HTTP 503") as caught:
        await keymgmt.client(RetryPolicy(max_attempts=3, backoff_s=1)).print_data(CARD)
    assert isinstance(caught.value, ConnectionError)
    assert len(keymgmt.seen) == 3
    assert keymgmt.sleeps == [1, 2]


async def test_an_unbounded_policy_waits_out_any_outage() -> None:
    outage: list[httpx.Response | Exception] = [
        httpx.ConnectError("down"),
        httpx.ReadTimeout("slow"),
        httpx.Response(502),
    ] * 10
    keymgmt = Keymgmt(*outage, httpx.Response(403), httpx.Response(200, json={"ok": True}))
    client = keymgmt.client(RetryPolicy.until_answered(backoff_s=0.01, backoff_max_s=0.05))
    request = c.ArqcRequest(card_id=CARD, cdol1="00" * 29, atc="0001", arqc="00" * 8)
    assert (await client.verify_arqc(request)).ok
    assert client.retries.failures == 31
    assert client.retries.last_problem.endswith("keymgmt refused our service token (403)")
    assert max(keymgmt.sleeps) == 0.05


async def test_refused_credentials_are_retried_only_where_the_policy_says() -> None:
    keymgmt = Keymgmt(httpx.Response(401), httpx.Response(200, json={"cards": []}))
    request = c.VaultStore.model_validate({"issuer_id": "acme", "cards": [card()]})
    with pytest.raises(KeymgmtUnavailable, match="service token"):
        await keymgmt.client(RetryPolicy(max_attempts=3)).store_cards(request)
    assert len(keymgmt.seen) == 1


async def test_a_refusal_is_never_retried() -> None:
    keymgmt = Keymgmt(httpx.Response(409, text="no"))
    with pytest.raises(KeymgmtRefused):
        await keymgmt.client(RetryPolicy.until_answered()).print_data(CARD)
    assert len(keymgmt.seen) == 1


async def test_a_403_with_a_refusal_code_is_a_verdict_not_our_credentials() -> None:
    """Station planning: keymgmt refuses this station the card (403 with its code); the
    station acts on it at once, even under a policy that waits out refused credentials."""
    code = {c.REFUSAL_HEADER: c.Refusal.CARD_NOT_FOR_THIS_STATION.value}
    keymgmt = Keymgmt(httpx.Response(403, text="not yours", headers=code))
    with pytest.raises(KeymgmtRefused) as caught:
        await keymgmt.client(RetryPolicy.until_answered()).print_data(CARD)
    assert caught.value.refusal is c.Refusal.CARD_NOT_FOR_THIS_STATION
    assert caught.value.status == 403
    assert len(keymgmt.seen) == 1


async def test_once_means_one_try() -> None:
    keymgmt = Keymgmt(httpx.ConnectError("down"))
    with pytest.raises(KeymgmtUnavailable, match="ConnectError"):
        await keymgmt.client(RetryPolicy.once()).checkpoint_public_key()
    assert len(keymgmt.seen) == 1
    assert keymgmt.sleeps == []


# -- one error vocabulary -----------------------------------------------------------------------
def answer(status: int, text: str = "", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, text=text, headers=headers)


@pytest.mark.parametrize("status", [200, 201, 204])
def test_2xx_is_no_error(status: int) -> None:
    assert status_error("GET", "/v1/x", answer(status)) is None


@pytest.mark.parametrize("status", [401, 403, 500, 502, 503, 504])
def test_5xx_and_refused_credentials_mean_unavailable(status: int) -> None:
    assert isinstance(status_error("GET", "/v1/x", answer(status)), KeymgmtUnavailable)


@pytest.mark.parametrize("code", list(c.Refusal))
def test_each_refusal_code_reaches_the_caller(code: c.Refusal) -> None:
    found = status_error("POST", "/v1/x", answer(409, "no", {c.REFUSAL_HEADER: code.value}))
    assert isinstance(found, KeymgmtRefused)
    assert found.refusal is code
    assert (found.status, found.detail, found.path) == (409, "no", "/v1/x")


def test_the_refusal_codes_on_the_wire() -> None:
    codes = {code.value for code in c.Refusal}
    assert codes == {
        "card-cryptogram-mismatch",
        "card-cancelled",
        "card-not-for-this-station",
        "card-not-in-qa",
        "card-in-qa-elsewhere",
        "readback-limit-reached",
        "checkpoint-size-backwards",
        "checkpoint-old-size-mismatch",
        "checkpoint-inconsistent",
    }


def test_a_refusal_without_or_with_an_unknown_code() -> None:
    plain = status_error("GET", "/v1/x", answer(404, "no such card"))
    assert isinstance(plain, KeymgmtRefused)
    assert plain.refusal is None
    assert plain.not_found
    novel = status_error("GET", "/v1/x", answer(409, "", {c.REFUSAL_HEADER: "a-new-code"}))
    assert isinstance(novel, KeymgmtRefused)
    assert novel.refusal == "a-new-code"


def test_a_refusal_never_carries_a_pan() -> None:
    found = status_error("GET", "/v1/x", answer(422, f"bad card {PAN}" + "x" * 300))
    assert isinstance(found, KeymgmtRefused)
    assert PAN not in str(found)
    assert "476173******0010" in found.detail
    assert len(found.detail) <= 200


@pytest.mark.parametrize("content", [b"not json", b"[]", b'{"ok": 1}', b'{"problems": []}'])
async def test_an_answer_outside_the_contract_is_a_bad_response(content: bytes) -> None:
    keymgmt = Keymgmt(httpx.Response(200, content=content))
    request = c.SimCheckRequest(card_id=CARD, rand="00" * 16, response="DB08")
    with pytest.raises(KeymgmtBadResponse, match="/v1/sim/qa/check"):
        await keymgmt.client().sim_check(request)


# -- every endpoint on the wire -----------------------------------------------------------------
def card() -> dict[str, Any]:
    return {
        "card_id": str(CARD),
        "pan": PAN,
        "psn": "01",
        "expiry": "2812",
        "cardholder_name": "JANE PUBLIC",
        "address": {"lines": ["1 Street"], "postcode": "T1", "city": "Town", "country": "GB"},
    }


async def test_store_cards() -> None:
    vaulted = {"card_id": str(CARD), "pan_token": "tok", "masked_pan": "476173******0010"}
    keymgmt = Keymgmt(httpx.Response(200, json={"cards": [vaulted]}))
    request = c.VaultStore.model_validate({"issuer_id": "acme", "cards": [card()]})
    stored = await keymgmt.client().store_cards(request)
    assert stored.by_card()[CARD].pan_token == "tok"
    assert (keymgmt.seen[0].method, keymgmt.seen[0].url.path) == ("POST", "/v1/vault/cards")
    assert keymgmt.body() == {"issuer_id": "acme", "cards": [card()]}
    assert keymgmt.seen[0].headers["authorization"] == "Bearer svc-token"
    assert PAN not in repr(request)


async def test_a_vault_body_written_card_by_card_is_the_models_json() -> None:
    cards = [card(), {**card(), "card_id": str(uuid.uuid4()), "psn": "01"}]
    request = c.VaultStore.model_validate({"issuer_id": "acme", "cards": cards})
    body = c.vault_store_json("acme", cards)
    assert body == request.model_dump_json().encode()
    keymgmt = Keymgmt(httpx.Response(200, json={"cards": []}))
    await keymgmt.client().store_cards_json(body)
    assert keymgmt.seen[0].content == body
    for issuer, bad in (("acme", []), ("no spaces", cards), ("acme", [{**card(), "pan": "12"}])):
        with pytest.raises(ValidationError):
            c.vault_store_json(issuer, bad)


# keymgmt's print-data answer for CARD, without a CVV2 (a product without a CVK pair).
PRINT_DATA: dict[str, Any] = {
    "card_id": str(CARD),
    "issuer_id": "acme",
    "cardholder_name": "JANE",
    "masked_pan": "476173******0010",
    "expiry": "2812",
}


async def test_vault_views() -> None:
    print_data = dict(PRINT_DATA)
    keymgmt = Keymgmt(httpx.Response(200, json=print_data))
    answer = await keymgmt.client().print_data(CARD)
    assert (answer.expiry, answer.cvv2) == ("2812", None)  # a product without a CVK pair
    assert keymgmt.seen[0].url.path == f"/v1/vault/cards/{CARD}/print-data"
    mailing = {k: card()[k] for k in ("card_id", "cardholder_name", "address")}
    keymgmt = Keymgmt(httpx.Response(200, json=mailing))
    assert (await keymgmt.client().mailing(CARD)).address.country == "GB"
    assert (keymgmt.seen[0].method, keymgmt.seen[0].url.path) == (
        "GET",
        f"/v1/vault/cards/{CARD}/mailing",
    )


async def test_sim_qa() -> None:
    challenge = {
        "card_id": str(CARD),
        "iccid": "8944",
        "imsi": "2341",
        "rand": "AB" * 16,
        "autn": "CD" * 16,
    }
    keymgmt = Keymgmt(httpx.Response(200, json=challenge))
    asked = await keymgmt.client().sim_challenge(c.SimChallengeRequest(card_id=CARD))
    assert (asked.rand, asked.autn) == (b"\xab" * 16, b"\xcd" * 16)
    assert keymgmt.seen[0].url.path == "/v1/sim/qa/challenge"
    assert keymgmt.body() == {"card_id": str(CARD)}
    verdict = {"card_id": str(CARD), "ok": False, "problems": ["RES differs"]}
    keymgmt = Keymgmt(httpx.Response(200, json=verdict))
    request = c.SimCheckRequest(card_id=CARD, rand="ab" * 16, response="db08")
    checked = await keymgmt.client().sim_check(request)
    assert checked.found("?") == ("RES differs",)
    assert keymgmt.body() == {"card_id": str(CARD), "rand": "ab" * 16, "response": "db08"}


async def test_checkpoint_signing() -> None:
    signed = {"key_id": "k1", "algorithm": "ecdsa-p256-sha256", "signature": "c2ln", "note": "N"}
    keymgmt = Keymgmt(httpx.Response(200, json=signed))
    request = c.CheckpointToSign(
        origin="bureau", tree_size=7, root_hash="ab" * 32, old_size=4, proof=["cd" * 32]
    )
    assert (await keymgmt.client().sign_checkpoint(request)).note == "N"
    assert keymgmt.seen[0].url.path == "/v1/signing/audit-checkpoints"
    assert keymgmt.body() == {
        "origin": "bureau",
        "tree_size": 7,
        "root_hash": "ab" * 32,
        "old_size": 4,
        "proof": ["cd" * 32],
    }
    last = {"origin": "bureau", "tree_size": 4, "root_hash": "ef" * 32}
    keymgmt = Keymgmt(httpx.Response(200, json=last))
    found = await keymgmt.client().last_signed_checkpoint("bureau")
    assert found is not None
    assert found.tree_size == 4
    assert keymgmt.seen[0].url.path == "/v1/signing/audit-checkpoints/last"
    assert keymgmt.seen[0].url.params["origin"] == "bureau"
    keymgmt = Keymgmt(httpx.Response(404, json={"detail": "nothing signed"}))
    assert await keymgmt.client().last_signed_checkpoint("bureau") is None
    key = {"label": "L", "key_id": "k1", "algorithm": "a", "public_key_pem": "PEM"}
    keymgmt = Keymgmt(httpx.Response(200, json=key))
    assert (await keymgmt.client().checkpoint_public_key()).public_key_pem == "PEM"
    assert (keymgmt.seen[0].method, keymgmt.seen[0].url.path) == (
        "GET",
        "/v1/signing/audit-checkpoints/public-key",
    )


def test_a_script_goes_on_the_wire_as_keymgmt_writes_it() -> None:
    script = c.SecureScript(
        card_id=CARD, chip_serial="a1b2c3d4e5f6", security_level="03", apdus=(b"\x84\x82", b"\xe6")
    )
    assert script.chip_serial == "A1B2C3D4E5F6"
    assert script.model_dump(mode="json")["apdus"] == ["8482", "E6"]


async def test_a_client_given_an_http_client_leaves_it_open() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"ok": True}))
    async with httpx.AsyncClient(transport=transport, base_url="http://keymgmt") as http:
        client = KeymgmtClient("http://keymgmt", "t", http=http)
        await client.aclose()
        request = c.ReadbackRequest(
            card_id=CARD, chip_serial="A1B2C3D4E5F6", qa_station="qa-1", records={"0101": "7000"}
        )
        assert (await client.readback(request)).ok
        assert http.is_closed is False


def test_answer_values_are_not_kept_in_the_parsers_string_cache() -> None:
    """pydantic-core caches short strings process-wide when it parses JSON; a keymgmt answer's
    values (PAN tokens, masked PANs, cardholder print data) must not stay behind in it."""
    card_id = str(uuid.uuid4())
    raw = json.dumps(
        {
            "cards": [
                {"card_id": card_id, "pan_token": "tok-unique-1", "masked_pan": "411111******1111"}
            ]
        }
    ).encode()
    first, second = c.VaultStored.model_validate_json(raw), c.VaultStored.model_validate_json(raw)
    assert first.cards[0].pan_token == second.cards[0].pan_token
    assert first.cards[0].pan_token is not second.cards[0].pan_token
    assert first.cards[0].masked_pan is not second.cards[0].masked_pan


async def test_a_trusted_ca_public_key_for_qa() -> None:
    answer = {"rid": "A000000003", "ca_index": "92", "modulus": "C0FFEE", "exponent": "03"}
    keymgmt = Keymgmt(httpx.Response(200, json=answer | {"expires": "2031-12-31"}))
    key = await keymgmt.client().ca_public_key("a000000003", "92")
    assert (key.modulus, key.expires.year) == ("C0FFEE", 2031)
    assert (keymgmt.seen[0].method, keymgmt.seen[0].url.path) == (
        "GET",
        "/v1/ca-keys/A000000003/92",
    )


def test_print_data_carries_the_cvv2_without_showing_it() -> None:
    print_data = dict(PRINT_DATA)
    answer = c.PrintData.model_validate(print_data | {"cvv2": "719"})
    assert answer.cvv2 == "719"
    assert "719" not in repr(answer)
    assert "719" not in str(answer)
    for bad in ("71", "7190", "7a9", 719):
        with pytest.raises(ValidationError) as refused:
            c.PrintData.model_validate(print_data | {"cvv2": bad})
        assert "cvv2" in str(refused.value)


async def test_a_bad_cvv2_from_keymgmt_is_a_bad_response_that_does_not_name_it() -> None:
    print_data = PRINT_DATA | {"cvv2": "7190"}
    keymgmt = Keymgmt(httpx.Response(200, json=print_data))
    with pytest.raises(KeymgmtBadResponse, match="cvv2") as bad:
        await keymgmt.client().print_data(CARD)
    assert "7190" not in str(bad.value)
