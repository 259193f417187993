"""The stack's two IPP printers (deploy/local/printers.sh) as docs/local-stack.md promises:
up, idle, on loopback only (avahi, which ippeveprinter needs, in a network namespace of its
own), the card printer keeping each job's document and output, the PIN printer nothing and
both reached over IPPS with their certificates verified against the stack's CA."""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image

from shared.ipp import IppClient, JobState, PrinterState
from tests.conftest import REPO

pytestmark = pytest.mark.integration

PRINTERS = REPO / "deploy" / "local" / "printers.sh"


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 25), "#336699").save(out, format="PNG")
    return out.getvalue()


async def print_once(uri: str, job_name: str, ca_file: str | None = None) -> None:
    client = IppClient(uri, user="stack-test", ca_file=ca_file)
    try:
        job = await client.print_job(png(), job_name=job_name, document_format="image/png")
        for _ in range(100):
            if (await client.job(job.job_id)).state.final:
                break
            await asyncio.sleep(0.05)
        assert (await client.job(job.job_id)).state is JobState.COMPLETED
        assert (await client.printer()).state in (PrinterState.IDLE, PrinterState.PROCESSING)
    finally:
        await client.aclose()


def listeners(port: int, process: str = "") -> list[str]:
    """Addresses bound to the TCP or UDP port (by that process, if named)."""
    ss = shutil.which("ss")
    assert ss, "ss (iproute2) is needed for this check"
    out = subprocess.run([ss, "-H", "-l", "-n", "-p", "-t", "-u"], capture_output=True, text=True)
    hosts = []
    for line in out.stdout.splitlines():
        host, _, found = line.split()[4].rpartition(":")
        if found == str(port) and process in line:
            hosts.append(host)
    return hosts


async def test_both_printers_print_on_loopback_only_and_the_pin_printer_keeps_nothing(
    stack_env: dict[str, str],
) -> None:
    status = subprocess.run(["bash", str(PRINTERS), "status"], capture_output=True, text=True)
    assert status.returncode == 0, status.stdout + status.stderr
    card_uri, pin_uri = stack_env["BUREAU_CARD_PRINTER_URI"], stack_env["BUREAU_PIN_PRINTER_URI"]
    for uri in (card_uri, pin_uri):
        hosts = listeners(urlsplit(uri).port or 631)
        assert hosts, f"nothing listens for {uri}"
        assert set(hosts) <= {"127.0.0.1", "[::1]"}, hosts
    assert not listeners(5353, "avahi"), "avahi's mDNS socket reached the host's network"

    name = f"stack-test-{uuid.uuid4().hex[:8]}"
    assert card_uri.startswith("ipps://"), "the card printer serves IPP over TLS (issue 16)"
    await print_once(card_uri, name, stack_env["BUREAU_CARD_PRINTER_CA"])
    assert pin_uri.startswith("ipps://"), "the PIN printer serves IPP over TLS (issue 16)"
    await print_once(pin_uri, name, stack_env["BUREAU_PIN_PRINTER_CA"])
    card_spool = Path(stack_env["BUREAU_CARD_PRINTER_SPOOL"])
    pin_spool = Path(stack_env["BUREAU_PIN_PRINTER_SPOOL"])
    [document] = card_spool.glob(f"*-{name}.png")
    [output] = card_spool.glob(f"*-{name}.prn")
    assert output.read_bytes() == document.read_bytes()  # the print command's copy
    assert not list(pin_spool.glob(f"*-{name}.png"))
    assert all(p.stat().st_size == 0 for p in pin_spool.glob(f"*-{name}.prn"))
