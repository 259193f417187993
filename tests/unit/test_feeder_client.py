"""shared/feeder_client.py against a feeder answered in memory (httpx.MockTransport): eject
once or until the feeder answers, insert by chip serial clearing a busy reader first, and the
one error vocabulary. The real feeder (vcard/api.py) is met in the electrical and QA
integration tests."""

from __future__ import annotations

import json

import httpx
import pytest

from shared.feeder_client import CardNotFound, FeederClient, FeederUnavailable


class Feeder:
    """A feeder whose answers the test queues; it records every request it gets."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, str, object]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.raw_path.decode(), body))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def client(feeder: Feeder, *, refill: bool | None = None) -> FeederClient:
    transport = httpx.MockTransport(feeder)
    return FeederClient("http://feeder", refill=refill, backoff_s=0.001, transport=transport)


async def test_eject_names_the_blank_fed_in_next_and_asks_the_feeders_default() -> None:
    feeder = Feeder(httpx.Response(200, json={"inserted": "1A2B3C4D0001"}))
    assert await client(feeder).eject("Virtual PCD 00") == "1A2B3C4D0001"
    assert feeder.requests == [("POST", "/readers/Virtual%20PCD%2000/eject", {})]


async def test_a_machine_that_never_wants_a_blank_says_so() -> None:
    feeder = Feeder(httpx.Response(200, json={}))
    assert await client(feeder, refill=False).eject("qa") is None
    assert feeder.requests == [("POST", "/readers/qa/eject", {"refill": False})]


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (httpx.Response(503, text="jammed"), "eject: HTTP 503 jammed"),
        (httpx.ConnectError("refused"), "feeder unreachable: ConnectError"),
        (httpx.Response(200, text="not json"), "not JSON"),
    ],
)
async def test_a_failed_eject_is_the_feeder_unavailable(
    answer: httpx.Response | Exception, problem: str
) -> None:
    with pytest.raises(FeederUnavailable, match=problem):
        await client(Feeder(answer)).eject("r")


async def test_eject_until_answered_retries_until_the_feeder_answers() -> None:
    feeder = Feeder(
        httpx.ConnectError("refused"),
        httpx.Response(500, text="busy"),
        httpx.Response(200, json={"inserted": "S2"}),
    )
    assert await client(feeder).eject_until_answered("r") == "S2"
    assert len(feeder.requests) == 3


async def test_insert_clears_a_reader_still_holding_a_card_then_inserts() -> None:
    feeder = Feeder(
        httpx.Response(409, text="occupied"),
        httpx.Response(200, json={"card": "OLD"}),
        httpx.Response(200, json={}),
        httpx.Response(200, json={}),
    )
    await client(feeder, refill=False).insert("qa", "S1")
    assert feeder.requests == [
        ("POST", "/readers/qa/insert", {"chip_serial": "S1"}),
        ("GET", "/readers/qa", None),
        ("POST", "/readers/qa/eject", {"refill": False}),
        ("POST", "/readers/qa/insert", {"chip_serial": "S1"}),
    ]


async def test_insert_of_an_unknown_chip_or_on_a_broken_feeder_says_which() -> None:
    with pytest.raises(CardNotFound, match="no chip S9"):
        await client(Feeder(httpx.Response(404))).insert("qa", "S9")
    broken = Feeder(httpx.Response(500, text="boom"), httpx.Response(200, json={"card": None}))
    with pytest.raises(FeederUnavailable, match="insert S1: HTTP 500 boom"):
        await client(broken).insert("qa", "S1")
