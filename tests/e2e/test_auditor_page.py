"""The auditor page in headless Chromium (Debian chromium + chromedriver, driven through the
W3C WebDriver protocol): an auditor searches a card and sees its whole timeline, checks the
latest checkpoint and a batch's reconciliation; then the verifier CLI, as its own process over
HTTP, proves the same log with keymgmt's public key and the witness's vkey. The audit service runs
on the real stack, its checkpoints signed by an in-process keymgmt on a real SoftHSM token and
cosigned by the witness process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from services.audit.app import build_app
from tests.support.audit import publish
from tests.support.audit_log import SignedLog, log_size_reaches
from tests.support.audit_story import BatchStory
from tests.support.bus import wait_for

pytestmark = pytest.mark.e2e

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
# Headless flags known to work on these machines (no background connections to fail).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Browser:
    """A few W3C WebDriver commands over chromedriver's HTTP API."""

    def __init__(self, client: httpx.AsyncClient, session: str) -> None:
        self.client, self.session = client, session

    async def command(self, method: str, path: str, body: Any = None) -> Any:
        url = f"/session/{self.session}{path}"
        response = await self.client.request(method, url, json=body)
        assert response.status_code == 200, response.text
        return response.json()["value"]

    async def find(self, css: str) -> str:
        found = await self.command("POST", "/element", {"using": "css selector", "value": css})
        return str(found[ELEMENT])

    async def texts(self, css: str) -> list[str]:
        found = await self.command("POST", "/elements", {"using": "css selector", "value": css})
        return [await self.command("GET", f"/element/{e[ELEMENT]}/text") for e in found]

    async def type(self, css: str, value: str) -> None:
        await self.command("POST", f"/element/{await self.find(css)}/value", {"text": value})

    async def click(self, css: str) -> None:
        await self.command("POST", f"/element/{await self.find(css)}/click", {})


@pytest.fixture
def chromedriver() -> Iterator[str]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail(
            "Debian chromium and chromium-driver are missing: run deploy/local/bootstrap.sh"
        )
    port = free_port()
    process = subprocess.Popen(
        [CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
async def browser(chromedriver: str) -> AsyncIterator[Browser]:
    profile = tempfile.mkdtemp(prefix="auditor-chromium-")
    options = {"binary": CHROMIUM, "args": [*FLAGS, f"--user-data-dir={profile}"]}
    capabilities = {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}
    async with httpx.AsyncClient(base_url=chromedriver, timeout=60) as client:

        async def driver_up() -> bool:
            try:
                return (await client.get("/status")).json()["value"]["ready"] is True
            except httpx.HTTPError:
                return False

        await wait_for(driver_up, timeout=20)
        created = await client.post("/session", json={"capabilities": capabilities})
        assert created.status_code == 200, created.text
        browser = Browser(client, created.json()["value"]["sessionId"])
        try:
            yield browser
        finally:
            await client.delete(f"/session/{browser.session}")
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
async def served(signed_log: SignedLog) -> AsyncIterator[str]:
    """The audit app on a real port; its runtime is already running (lifespan off)."""
    port = free_port()
    config = uvicorn.Config(
        build_app(signed_log.runtime), host="127.0.0.1", port=port, lifespan="off", log_config=None
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def serving() -> bool:
        return server.started

    await wait_for(serving, timeout=20)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def run_verifier(
    url: str, key: Path, witness_vkey: str, *command: str
) -> tuple[int, dict[str, Any]]:
    """The auditors' CLI as its own process, over HTTP, with only the public key, the witness's
    vkey and its own memory."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.audit.verify",
        "--url",
        url,
        "--public-key",
        str(key),
        "--witness-vkey",
        witness_vkey,
        "--state",
        str(key.with_name("verifier-memory.json")),
        *command,
        env={**os.environ, "BUREAU_AUDITOR_TOKEN": "auditor-dev-token"},
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return int(process.returncode or 0), json.loads(out)


async def test_an_auditor_searches_a_card_and_sees_its_whole_timeline(
    signed_log: SignedLog, served: str, browser: Browser, tmp_path: Path
) -> None:
    story = BatchStory(2)
    batch = [*story.good_batch(), story.dispatch(story.card_ids)]
    await publish(signed_log.settings, batch)
    size = await log_size_reaches(signed_log, len(batch))
    assert await signed_log.checkpoint()  # signed by keymgmt, cosigned by the witness process
    await log_size_reaches(signed_log, size + 1)
    card = story.card_ids[0]
    expected = [
        e.type
        for e in batch
        if getattr(e, "card_id", None) == card or (card in getattr(e, "card_ids", ()))
    ]

    await browser.command("POST", "/url", {"url": f"{served}/auditor"})
    await browser.type("#token", "auditor-dev-token")
    await browser.click("#save-token")
    await browser.type("#card-id", str(card))
    await browser.click("#search-button")

    async def timeline_shown() -> bool:
        return len(await browser.texts("#timeline li.step")) == len(expected)

    await wait_for(timeline_shown, timeout=20)
    steps = await browser.texts("#timeline li.step strong")
    assert steps == expected  # ordered, prepared, ... packed, shipment.dispatched
    assert len(await browser.texts("#results tr.event")) == len(expected)

    await browser.click("#check")

    async def verdict() -> bool:
        return bool(await browser.texts("#checkpoint-verdict"))

    await wait_for(verdict, timeout=20)
    assert await browser.texts("#checkpoint-verdict") == ["verified"]

    await browser.type("#reconcile-batch-id", str(story.batch_id))
    await browser.click("#batch-button")

    async def batch_shown() -> bool:
        return bool(await browser.texts("#batch-status"))

    await wait_for(batch_shown, timeout=20)
    assert await browser.texts("#batch-status") == ["closed"]

    # What the page says, the auditors' own verifier proves from the keys alone.
    key = tmp_path / "checkpoint-key.pem"
    key.write_text(signed_log.public_key_pem)
    status, report = await run_verifier(served, key, signed_log.witness_vkey, "audit")
    assert status == 0, report
    # The checkpoint covers the batch and whatever audit itself logged since (its own
    # batch.reconciled / batch.closed decisions may land before the signature): at least `size`.
    covered = [
        int(m.group(1))
        for check in report["checks"]
        if (m := re.fullmatch(r"all (\d+) entries hash to the signed root", check))
    ]
    assert len(covered) == 1, report["checks"]
    assert covered[0] >= size
    first = str(batch[0].event_id)
    status, report = await run_verifier(
        served, key, signed_log.witness_vkey, "inclusion", "--event-id", first
    )
    assert status == 0, report
