"""The whole machine's CPU during a bench window, beside our services': how busy the cores
were (/proc/stat) and what the stack's own daemons took (PostgreSQL with its backends, the
Kafka broker, pcscd, the IPP printers), so a run says whether the software, the stack or
another tenant of the machine had the CPU. Linux /proc only.

Another tenant shows two ways: as steal (time the hypervisor gave our cores to someone else,
/proc/stat) and as a slower core while it runs beside us (shared caches and memory), which no
counter shows. `speed` measures the second: a fixed pure-Python workload, as operations per
CPU-second, taken before, during (every progress interval) and after the bench's window; two
runs are comparable only when their speeds are (on this machine a fixed loop took half as
long again from one hour to the next)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
Proc = tuple[int, float]  # parent pid, CPU seconds
GROUPS = {"postgres": "postgres", "java": "kafka", "pcscd": "pcscd", "ippeveprinter": "printers"}


@dataclass(frozen=True)
class CpuSample:
    busy_s: float  # all cores' non-idle time since boot (steal included)
    steal_s: float  # time the hypervisor ran another guest on our cores
    total_s: float
    stack_s: dict[str, float]  # the stack's daemons (with their children) since they started


def process_cpu(pid: str) -> Proc | None:
    """(parent pid, CPU seconds) of a live process, with those of its children that ended and
    were waited for (cutime, cstime): a PostgreSQL backend that lived less than the window is
    counted in the postmaster's, a print command in its printer's. None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), sum(int(v) for v in fields[11:15]) / TICKS


def _roots(run_dir: Path) -> dict[int, str]:
    """The stack's daemons of this run directory: pid -> group."""
    mark = str(run_dir).encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        group = GROUPS.get(Path(argv.split(b"\0", 1)[0].decode(errors="replace")).name)
        if group is not None and mark in argv:
            found[int(entry.name)] = group
    return found


def _group_of(pid: int, procs: Mapping[int, Proc | None], roots: dict[int, str]) -> str | None:
    """The daemon group `pid` belongs to: itself or one of its parents a daemon of the stack."""
    for _ in range(64):
        if pid in roots:
            return roots[pid]
        info = procs.get(pid)
        if info is None or info[0] <= 1:
            return None
        pid = info[0]
    return None


def sample(run_dir: Path) -> CpuSample:
    ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    roots = _roots(run_dir)
    procs = {int(p.name): process_cpu(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}
    stack: dict[str, float] = {}
    for pid, info in procs.items():
        group = _group_of(pid, procs, roots)
        if group is not None and info is not None:
            stack[group] = stack.get(group, 0.0) + info[1]
    steal = ticks[7] if len(ticks) > 7 else 0
    return CpuSample((sum(ticks) - idle) / TICKS, steal / TICKS, sum(ticks) / TICKS, stack)


def speed(seconds: float = 1.0) -> float:
    """Operations per CPU-second of a fixed single-core workload (an interpreted loop and
    SHA-256, the mix our services spend their CPU on), best of three rounds of `seconds` / 3
    of this thread's CPU time. Counted against the thread's own CPU time, not the wall clock,
    so cores busy with the bench's services do not lower it; a core slowed by another tenant
    (shared caches, memory, clock) does."""
    block = bytes(4096)
    best = 0.0
    for _ in range(3):
        ops, started = 0, time.thread_time()
        while (used := time.thread_time() - started) < seconds / 3:
            total = 0
            for i in range(2000):
                total += i * i
            hashlib.sha256(block).digest()
            ops += 1
        best = max(best, ops / used)
    return round(best, 1)


def shares(before: CpuSample, after: CpuSample, wall_s: float) -> dict[str, object]:
    """Cores used over the window: the machine's, and each stack daemon group's."""
    cores = os.cpu_count() or 1
    busy = (after.busy_s - before.busy_s) / wall_s
    return {
        "machine_cores": cores,
        "machine_busy_cores": round(busy, 3),
        "machine_stolen_cores": round((after.steal_s - before.steal_s) / wall_s, 3),
        "stack_daemons_cores": {
            name: round((after.stack_s[name] - before.stack_s.get(name, 0.0)) / wall_s, 3)
            for name in sorted(after.stack_s)
        },
    }
