"""A real IPP printer per test: Debian's ippeveprinter on a free port with its own spool,
on the private D-Bus that deploy/local/printers.sh runs (ippeveprinter needs DNS-SD); with
`tls_keys` it serves IPPS with the certificate found there.

The print command copies the document to the job's output (`<job>-<name>.prn`, what came out
of the printer); two faults can be armed like the card feeder's: `jam()` makes the printer
abort every job until `unjam()`, `misprint(image)` makes the next job print that image instead.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from pathlib import Path

from tests.conftest import REPO
from tests.support.tls import TestCa

# What the stack's printers take (deploy/local/printers.sh): graphical's JPEG faces, the PIN
# mailer's PNG, the carrier letters' PDF.
FORMATS = "image/jpeg,image/png,application/pdf"
RUN_DIR = Path(os.environ.get("BUREAU_RUN_DIR", REPO / ".run"))
BUS_SOCKET = RUN_DIR / "printers" / "dbus.sock"

PRINT_COMMAND = """#!/bin/sh
# $1: the spooled document; stdout: what the printer put on the card (kept as <job>.prn).
[ -e "{home}/jammed" ] && {{ echo "printer jammed" >&2; exit 1; }}
if mv "{home}/misprint" "{home}/misprint.used" 2>/dev/null; then
    cat "{home}/misprint.used"; rm -f "{home}/misprint.used"; exit 0
fi
exec cat "$1"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestPrinter:
    __test__ = False

    def __init__(
        self,
        home: Path,
        name: str = "test-card",
        formats: str = FORMATS,
        tls_keys: Path | None = None,
        ca_file: Path | None = None,
    ) -> None:
        """`tls_keys`: a folder holding localhost.crt and localhost.key (tests/support/tls.py);
        the printer then serves IPP over TLS too, and `uri` is its ipps:// URI. `ca_file`: the
        CA a client verifies its certificate against (`tls()` makes both)."""
        self.home = home
        self.name = name
        self.formats = formats
        self.tls_keys = tls_keys
        self.ca_file = ca_file
        self.port = free_port()
        self.spool = home / "spool"
        scheme = "ipp" if tls_keys is None else "ipps"
        self.uri = f"{scheme}://localhost:{self.port}/ipp/print"
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def tls(cls, home: Path, name: str = "test-card", formats: str = FORMATS) -> TestPrinter:
        """A printer serving IPPS with a certificate for localhost from a CA of its own
        (`ca_file`, what the client is told to trust)."""
        ca = TestCa.create(home / "ca", f"{name} test CA")
        ca.issue(home / "keys")
        return cls(home, name, formats, tls_keys=home / "keys", ca_file=ca.cert_file)

    @property
    def ca(self) -> str | None:
        """The CA file as settings take it."""
        return None if self.ca_file is None else str(self.ca_file)

    def start(self) -> None:
        if not BUS_SOCKET.exists():
            raise RuntimeError(f"{BUS_SOCKET} missing: run deploy/local/printers.sh up")
        self.spool.mkdir(parents=True, exist_ok=True)
        command = self.home / "print-command"
        command.write_text(PRINT_COMMAND.format(home=self.home))
        command.chmod(0o755)
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={BUS_SOCKET}"}
        self._proc = subprocess.Popen(
            ["ippeveprinter", "-n", "localhost", "-p", str(self.port), "-k"]
            + ([] if self.tls_keys is None else ["-K", str(self.tls_keys)])
            + ["-c", str(command), "-d", str(self.spool), "-f", self.formats]
            + [self.name],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=(self.home / "printer.log").open("ab"),
            stderr=subprocess.STDOUT,
        )

    async def wait_up(self, timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return
        raise TimeoutError(f"printer on port {self.port} did not come up")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def jam(self) -> None:
        (self.home / "jammed").touch()

    def unjam(self) -> None:
        (self.home / "jammed").unlink(missing_ok=True)

    def misprint(self, image: bytes) -> None:
        partial = self.home / "misprint.partial"
        partial.write_bytes(image)
        partial.rename(self.home / "misprint")

    def documents(self, job_name: str) -> list[Path]:
        """The documents the printer received under that job name (one per Print-Job), of any
        format it keeps them in (jpg, png, pdf)."""
        return sorted(
            path
            for extension in ("jpg", "png", "pdf")
            for path in self.spool.glob(f"*-{job_name}.{extension}")
        )

    def outputs(self, job_name: str) -> list[Path]:
        return sorted(self.spool.glob(f"*-{job_name}.prn"))
