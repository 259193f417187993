"""The auditor's lists of log entries page one way (services/audit/paging.py): bounds on the
query named in the error, the next page's start, and the same parameters on every list route."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.audit import api, control_api, security_api
from services.audit.paging import MAX_PAGE, LogPage, Page

PAGING = ("after_seq", "limit")


@pytest.fixture
async def client() -> Any:
    app = FastAPI()

    @app.get("/page")
    async def echo(page: Page) -> dict[str, int]:
        return {"after_seq": page.after_seq, "limit": page.limit}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://audit") as http:
        yield http


async def test_a_page_defaults_to_the_start_of_the_log(client: httpx.AsyncClient) -> None:
    answer = await client.get("/page")
    assert answer.json() == {"after_seq": 0, "limit": 100}
    answer = await client.get("/page", params={"after_seq": 41, "limit": MAX_PAGE})
    assert answer.json() == {"after_seq": 41, "limit": MAX_PAGE}


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": MAX_PAGE + 1}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"after_seq": -1}, "after_seq"),
    ],
)
async def test_an_out_of_bounds_page_is_refused_naming_the_parameter(
    client: httpx.AsyncClient, params: dict[str, Any], named: str
) -> None:
    answer = await client.get("/page", params=params)
    assert answer.status_code == 422, answer.text
    assert [e["loc"] for e in answer.json()["detail"]] == [["query", named]]


def test_the_next_page_starts_after_a_full_page_and_a_short_page_is_the_last() -> None:
    page = LogPage(after_seq=10, limit=2)
    full = page.answer("events", [{"seq": 11}, {"seq": 14}])
    assert full == {"events": [{"seq": 11}, {"seq": 14}], "next_after_seq": 14}
    assert page.answer("events", [{"seq": 11}])["next_after_seq"] is None
    assert page.answer("events", [])["next_after_seq"] is None


def test_every_list_of_log_entries_takes_the_same_page_parameters() -> None:
    app = FastAPI()
    for module in (api, control_api, security_api):
        app.include_router(module.router)
    paths = app.openapi()["paths"]
    for path in ("/v1/events", "/v1/control-events", "/v1/security-events"):
        query = {p["name"]: p["schema"] for p in paths[path]["get"]["parameters"]}
        bounds = {name: (query[name]["minimum"], query[name].get("maximum")) for name in PAGING}
        assert bounds["after_seq"] == (0, None), path
        assert bounds["limit"] == (1, MAX_PAGE), path
