"""The PIN printer over IPPS (issue 16): a real ippeveprinter serving TLS on a free port under
the test's own folder, with certificates a test CA made. The client verifies the chain against
the configured CA and the name against the URI's host; a printer with a certificate from
another CA, or for another host, is refused before any document leaves."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from shared.ipp import IppClient, IppUntrusted, JobState
from tests.support.printer import TestPrinter
from tests.support.tls import TestCa

pytestmark = pytest.mark.integration


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 25), "#663399").save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def ca(tmp_path: Path) -> TestCa:
    return TestCa.create(tmp_path / "ca", "bureau test CA")


async def tls_printer(home: Path, keys: Path) -> TestPrinter:
    printer = TestPrinter(home, name="test-pin", tls_keys=keys)
    printer.start()
    await printer.wait_up()
    return printer


@pytest.fixture
async def good_printer(tmp_path: Path, ca: TestCa) -> AsyncIterator[TestPrinter]:
    ca.issue(tmp_path / "good-keys")
    printer = await tls_printer(tmp_path / "good", tmp_path / "good-keys")
    try:
        yield printer
    finally:
        printer.stop()


async def test_the_pin_printer_prints_over_ipps_with_its_certificate_verified(
    good_printer: TestPrinter, ca: TestCa
) -> None:
    assert good_printer.uri.startswith("ipps://")
    client = IppClient(good_printer.uri, user="t", ca_file=str(ca.cert_file), require_tls=True)
    try:
        job = await client.print_job(png(), job_name="ipps-ok", document_format="image/png")
        for _ in range(100):
            if (await client.job(job.job_id)).state.final:
                break
            await asyncio.sleep(0.05)
        assert (await client.job(job.job_id)).state is JobState.COMPLETED
    finally:
        await client.aclose()
    [document] = good_printer.documents("ipps-ok")
    assert document.read_bytes() == png()


@pytest.mark.parametrize("wrong", ["another CA", "another host"])
async def test_a_printer_with_a_wrong_certificate_is_refused_and_receives_nothing(
    tmp_path: Path, ca: TestCa, wrong: str
) -> None:
    keys = tmp_path / "wrong-keys"
    if wrong == "another CA":  # a certificate for localhost, from a CA the client does not trust
        TestCa.create(tmp_path / "rogue", "rogue CA").issue(keys)
    else:  # our CA, but the certificate names another printer
        ca.issue(keys, names=("printer.example",))
    printer = await tls_printer(tmp_path / "wrong", keys)
    client = IppClient(printer.uri, user="t", ca_file=str(ca.cert_file), require_tls=True)
    try:
        with pytest.raises(IppUntrusted, match="TLS certificate does not verify"):
            await client.print_job(png(), job_name="ipps-refused", document_format="image/png")
        with pytest.raises(IppUntrusted):
            await client.printer()
    finally:
        await client.aclose()
        printer.stop()
    assert not printer.documents("ipps-refused")
    assert not list(printer.spool.glob("*ipps-refused*"))


async def test_without_the_ca_the_system_trust_store_refuses_a_private_printer(
    good_printer: TestPrinter,
) -> None:
    client = IppClient(good_printer.uri, user="t", require_tls=True)
    try:
        with pytest.raises(IppUntrusted, match="system's trust store"):
            await client.printer()
    finally:
        await client.aclose()
