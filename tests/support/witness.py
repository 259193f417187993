"""The witness as its own process for the tests (`python -m services.audit.witness` on a free
port, its store in a test directory), stopped and restarted at will."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.electrical import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class WitnessProcess:
    directory: Path
    log_vkey: str
    name: str = "witness.test/w1"
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> str:
        """Start it and wait until it answers; returns its vkey."""
        env = os.environ | {
            "BUREAU_WITNESS_NAME": self.name,
            "BUREAU_WITNESS_PORT": str(self.port),
            "BUREAU_WITNESS_DIR": str(self.directory),
            "BUREAU_WITNESS_LOG_VKEYS": self.log_vkey,
        }
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.audit.witness", cwd=REPO, env=env
        )
        async with httpx.AsyncClient(base_url=self.url) as http:
            for _ in range(200):
                if self.process.returncode is not None:
                    raise RuntimeError(f"the witness exited with {self.process.returncode}")
                try:
                    ready = await http.get("/ready")
                    if ready.status_code == 200:
                        return str(ready.json()["vkey"])
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("the witness did not become ready in 20 s")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), timeout=10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.process = None
