"""The fault suite's faults (issues 17 and 19), each a real break of a real component of the
running bureau and its heal: kill -9 of a service (its keeper in deploy/local/services.sh starts
it again), Kafka killed and started again, PostgreSQL stopped hard and started again, pcscd
restarted, the card feeder killed, a station unplugged mid-card, the card printer jammed, and
the two poison records of issue 19 (a non-UTF-8 key on the qa stream, an undecodable record of
the broker's maximum size on the electrical stream).

A fault's `heal` is always called, whatever `inject` or the wait did (the runner calls it in a
`finally`), and is idempotent: the shared stack is never left broken.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx

from tests.conftest import REPO
from tests.support.poison import RawRecord, broker_max_value, produce_raw
from tests.support.postgres_fault import start_postgres, stop_postgres_hard

SERVICE_PORTS = {
    "intake": 8101,
    "keymgmt": 8102,
    "electrical": 8103,
    "graphical": 8104,
    "qa": 8105,
    "fulfillment": 8106,
    "audit": 8107,
}
FEEDER = "http://127.0.0.1:8110"
PCSCD_SH = REPO / "deploy" / "local" / "pcscd.sh"
KAFKA_MAIN = "kafka.Kafka"


@dataclass
class Floor:
    """The running bureau a fault breaks: the stack's environment and run directory."""

    env: dict[str, str]
    run_dir: Path = field(init=False)
    notes: list[str] = field(default_factory=list)  # what a fault saw, for its result line

    def __post_init__(self) -> None:
        self.run_dir = Path(self.env["BUREAU_RUN_DIR"])

    @property
    def prefix(self) -> str:
        return self.env.get("BUREAU_TOPIC_PREFIX", "bureau")


Step = Callable[[Floor], Awaitable[None]]


async def _nothing(_floor: Floor) -> None:
    return None


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Step
    heal: Step = _nothing
    hold_s: float = 0.0  # how long the fault lasts before `heal`
    outage: bool = False  # a shared component down: the log lines written during it count


# -- processes --------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def service_pid(floor: Floor, name: str) -> int | None:
    try:
        pid = int((floor.run_dir / "pids" / f"{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


async def _wait_gone(pid: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"pid {pid} still alive {timeout} s after SIGKILL")
        await asyncio.sleep(0.05)


def kill_service(name: str) -> Fault:
    """kill -9 of the service's process; its keeper starts it again (1 s backoff)."""

    async def inject(floor: Floor) -> None:
        pid = service_pid(floor, name)
        if pid is None:
            raise RuntimeError(f"{name} is not running")
        os.kill(pid, signal.SIGKILL)
        await _wait_gone(pid)
        floor.notes.append(f"killed pid {pid}")

    return Fault(f"kill -9 {name}", inject)


# -- Kafka ------------------------------------------------------------------------------------
@dataclass
class _Broker:
    argv: list[str]
    environ: dict[str, str]
    cwd: str


_broker: dict[str, _Broker] = {}  # run dir -> how its broker ran, kept by inject for heal


def kafka_pid(floor: Floor) -> int | None:
    """The broker of this run directory (the java process running kafka.Kafka on its
    properties), as deploy/local/stack.sh finds it."""
    props = str(floor.run_dir / "kafka" / "server.properties")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        if KAFKA_MAIN in words and props in words and _pid_alive(int(entry.name)):
            return int(entry.name)
    return None


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _kafka_port(floor: Floor) -> int:
    return int(floor.env["BUREAU_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1])


async def _kill_kafka(floor: Floor) -> None:
    pid = kafka_pid(floor)
    if pid is None:
        raise RuntimeError("the stack's Kafka broker is not running")
    proc = Path(f"/proc/{pid}")
    raw_env = (proc / "environ").read_bytes().split(b"\0")
    _broker[str(floor.run_dir)] = _Broker(
        [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a],
        dict(e.decode(errors="replace").split("=", 1) for e in raw_env if b"=" in e),
        os.readlink(proc / "cwd"),
    )
    os.kill(pid, signal.SIGKILL)
    await _wait_gone(pid)
    floor.notes.append(f"broker pid {pid} killed")


async def _start_kafka(floor: Floor) -> None:
    """The broker started again exactly as it ran (its command line, environment and working
    directory), in a session of its own, appending to the stack's kafka.out; then its port."""
    if kafka_pid(floor) is None:
        broker = _broker.get(str(floor.run_dir))
        if broker is None:
            raise RuntimeError("Kafka is down and its command line was never seen")
        with (floor.run_dir / "logs" / "kafka.out").open("ab") as out:
            subprocess.run(
                ["setsid", "-f", *broker.argv],
                env=broker.environ,
                cwd=broker.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=30,
            )
    deadline = time.monotonic() + 120
    while not _port_open(_kafka_port(floor)):
        if time.monotonic() > deadline:
            raise TimeoutError("Kafka did not listen again within 120 s")
        await asyncio.sleep(0.2)
    pid = kafka_pid(floor)
    if pid is not None:
        (floor.run_dir / "kafka" / "kafka.pid").write_text(f"{pid}\n")


def kafka_outage(hold_s: float) -> Fault:
    return Fault(f"Kafka killed for {hold_s:g} s", _kill_kafka, _start_kafka, hold_s, True)


# -- PostgreSQL, pcscd ------------------------------------------------------------------------
def postgres_outage(hold_s: float) -> Fault:
    async def inject(floor: Floor) -> None:
        await asyncio.to_thread(stop_postgres_hard, str(floor.run_dir))

    async def heal(floor: Floor) -> None:
        await asyncio.to_thread(start_postgres, str(floor.run_dir))

    return Fault(f"PostgreSQL stopped hard for {hold_s:g} s", inject, heal, hold_s, True)


def _pcscd(floor: Floor, command: str) -> None:
    subprocess.run(
        ["bash", str(PCSCD_SH), command],
        env={**os.environ, "BUREAU_RUN_DIR": str(floor.run_dir)},
        check=True,
        capture_output=True,
        timeout=60,
    )


def pcscd_restart(hold_s: float) -> Fault:
    async def inject(floor: Floor) -> None:
        await asyncio.to_thread(_pcscd, floor, "down")

    async def heal(floor: Floor) -> None:
        await asyncio.to_thread(_pcscd, floor, "up")

    return Fault(f"pcscd stopped for {hold_s:g} s", inject, heal, hold_s, True)


# -- the card feeder, the station, the printer -----------------------------------------------
def feeder_restart() -> Fault:
    """kill -9 of the card feeder (every reader's card gone at once); its keeper restarts it
    and it feeds blanks again from its store."""
    return Fault("kill -9 card feeder", kill_service("feeder").inject)


async def _hopper_readers(http: httpx.AsyncClient) -> list[dict[str, object]]:
    readers: list[dict[str, object]] = (await http.get(f"{FEEDER}/readers")).json()["readers"]
    return [r for r in readers if r["mode"] == "hopper"]


async def _pull_cards(http: httpx.AsyncClient) -> int:
    """Every card out of the station's readers, none fed in their place; how many came out."""
    pulled = 0
    for reader in await _hopper_readers(http):
        if reader["card"] is None:
            continue
        name = quote(str(reader["name"]), safe="")
        answer = await http.post(f"{FEEDER}/readers/{name}/eject", json={"refill": False})
        pulled += answer.status_code == 200 and answer.json()["ejected"] is not None
    return pulled


async def _keep_unplugged(http: httpx.AsyncClient, pulled: list[int]) -> None:
    while True:  # the agent's own eject feeds a blank: out it comes again, the reader is dead
        pulled.append(await _pull_cards(http))
        await asyncio.sleep(0.3)


def station_unplugged(hold_s: float) -> Fault:
    """The encoding station unplugged for `hold_s`: every card goes out of its readers at once,
    those being personalised half written, and the readers stay empty (any blank the transport
    feeds is pulled at once); plugged back, each reader gets a blank again."""
    state: dict[str, object] = {}

    async def inject(floor: Floor) -> None:
        http = httpx.AsyncClient(timeout=10)
        pulled: list[int] = []
        state.update(http=http, pulled=pulled)
        state["task"] = asyncio.create_task(_keep_unplugged(http, pulled))

    async def heal(floor: Floor) -> None:
        task, http, pulled = state.get("task"), state.get("http"), state.get("pulled", [])
        if isinstance(task, asyncio.Task):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if isinstance(http, httpx.AsyncClient):
            await http.aclose()
        async with httpx.AsyncClient(timeout=10) as plugged:
            for reader in await _hopper_readers(plugged):
                if reader["card"] is None:
                    name = quote(str(reader["name"]), safe="")
                    fed = await plugged.post(
                        f"{FEEDER}/readers/{name}/eject", json={"refill": True}
                    )
                    fed.raise_for_status()
        floor.notes.append(f"{sum(pulled) if isinstance(pulled, list) else 0} cards pulled out")

    return Fault(f"station unplugged for {hold_s:g} s", inject, heal, hold_s)


def printer_jammed(hold_s: float) -> Fault:
    """The card printer jammed: it aborts every job while `jammed` is in its folder
    (deploy/local/printers.sh); an aborted job's card is spoiled, never printed twice."""

    def jam_file(floor: Floor) -> Path:
        return floor.run_dir / "printers" / "card" / "jammed"

    async def inject(floor: Floor) -> None:
        jam_file(floor).touch()

    async def heal(floor: Floor) -> None:
        jam_file(floor).unlink(missing_ok=True)

    return Fault(f"card printer jammed for {hold_s:g} s", inject, heal, hold_s)


# -- poison records (issue 19) ----------------------------------------------------------------
def poison_key_on_qa() -> Fault:
    """A record on the qa stream whose key is not UTF-8, its value a card.qa_passed look-alike."""

    async def inject(floor: Floor) -> None:
        record = RawRecord("non-UTF-8 key", b"\xff\xfe\xc3\x28card", b'{"type": "card.qa_passed"}')
        topic = f"{floor.prefix}.qa"
        (offset,) = await produce_raw(floor.env["BUREAU_KAFKA_BOOTSTRAP"], topic, [record])
        floor.notes.append(f"{topic}@{offset}")

    return Fault("poison: non-UTF-8 key on qa", inject)


def oversize_on_electrical() -> Fault:
    """An undecodable record of the broker's maximum size on the electrical stream: its
    dead-letter copy (the record plus headers) cannot fit the broker as it is."""

    async def inject(floor: Floor) -> None:
        bootstrap, topic = floor.env["BUREAU_KAFKA_BOOTSTRAP"], f"{floor.prefix}.electrical"
        size = await broker_max_value(bootstrap, topic)
        record = RawRecord("maximum size", os.urandom(16), b"\xff" + os.urandom(size - 1))
        (offset,) = await produce_raw(bootstrap, topic, [record])
        floor.notes.append(f"{size} bytes at {topic}@{offset}")

    return Fault("poison: undecodable max-size record on electrical", inject)


def catalogue(kafka_s: float, postgres_s: float, long_kafka_s: float | None) -> list[Fault]:
    """Every fault of issues 17 and 19, in the order the suite runs them."""
    faults = [kill_service(name) for name in SERVICE_PORTS]
    faults += [
        kafka_outage(kafka_s),
        postgres_outage(postgres_s),
        pcscd_restart(3.0),
        feeder_restart(),
        station_unplugged(4.0),
        printer_jammed(4.0),
        poison_key_on_qa(),
        oversize_on_electrical(),
    ]
    if long_kafka_s is not None:
        faults.append(kafka_outage(long_kafka_s))
    return faults
