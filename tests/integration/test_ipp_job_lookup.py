"""Finding a job by name on a real printer that keeps many (issue 17): the lookup reads the
newest jobs first in a window that widens, so it finds an old job, says "none" only after
reading the whole history, and refuses to guess when too many newer jobs hide it. And a
printer busy with one job (ippeveprinter takes one at a time) makes concurrent submitters wait
in place: every job printed once, none looked up."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from shared import ipp
from shared.ipp import IppClient, IppHistoryTooLong, JobStatus
from shared.print_jobs import PrintJobMachine, PrintPolicy
from tests.support.printer import TestPrinter

pytestmark = pytest.mark.integration


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 5), "#336699").save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
async def printer(tmp_path: Path) -> AsyncIterator[TestPrinter]:
    printer = TestPrinter(tmp_path, name="lookup")
    printer.start()
    await printer.wait_up()
    try:
        yield printer
    finally:
        printer.stop()


async def print_many(client: IppClient, names: list[str]) -> None:
    machine = PrintJobMachine(client, document_format="image/png", policy=PrintPolicy())
    for name in names:  # one at a time, each asked again in place while the printer is busy
        await machine.print_when_free(png(), name)


async def test_an_old_job_is_found_behind_many_newer_and_a_missing_one_is_none(
    printer: TestPrinter, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = IppClient(printer.uri, user="t")
    try:
        names = [f"job-{i}" for i in range(ipp.FIND_FIRST * 2 + 5)]
        await print_many(client, names)
        oldest = await client.find_job("job-0")  # beyond the first window: it widens
        newest = await client.find_job(names[-1])
        assert isinstance(oldest, JobStatus)
        assert isinstance(newest, JobStatus)
        assert (oldest.name, newest.name) == ("job-0", names[-1])
        assert newest.job_id - oldest.job_id == len(names) - 1
        assert await client.find_job("never-sent") is None  # the whole history was read
        monkeypatch.setattr(ipp, "FIND_MAX", ipp.FIND_FIRST)
        with pytest.raises(IppHistoryTooLong, match="cannot tell"):
            await client.find_job("job-0")
    finally:
        await client.aclose()


async def test_concurrent_submitters_to_a_busy_printer_each_print_once(
    printer: TestPrinter,
) -> None:
    client = IppClient(printer.uri, user="t")
    machine = PrintJobMachine(client, document_format="image/png", policy=PrintPolicy())
    try:
        names = [f"busy-{i}" for i in range(12)]
        await asyncio.gather(*(machine.print_when_free(png(), n) for n in names))
        listed = await client.jobs("all", limit=100)
        assert sorted(j.name or "" for j in listed) == sorted(names)
    finally:
        await client.aclose()
