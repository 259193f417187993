"""bench/machine_cpu.py: a stack daemon's children count as the daemon's (PostgreSQL's
backends), other processes as nobody's, and shares are cores over the window."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.machine_cpu import CpuSample, _group_of, process_cpu, sample, shares, speed

PROCS = {
    100: (1, 5.0),  # the postmaster
    101: (100, 2.0),  # a backend
    102: (101, 1.0),  # a child of a backend
    200: (1, 9.0),  # someone else
    201: (200, 3.0),
}


def test_a_daemons_descendants_are_its_group_and_others_none() -> None:
    roots = {100: "postgres"}
    procs = dict(PROCS)
    assert [_group_of(pid, procs, roots) for pid in (100, 101, 102)] == ["postgres"] * 3
    assert _group_of(200, procs, roots) is None
    assert _group_of(201, procs, roots) is None
    assert _group_of(999, procs, roots) is None  # gone meanwhile


def test_shares_are_cores_over_the_window() -> None:
    before = CpuSample(busy_s=100.0, steal_s=1.0, total_s=400.0, stack_s={"postgres": 10.0})
    after = CpuSample(
        busy_s=130.0, steal_s=3.0, total_s=440.0, stack_s={"postgres": 16.0, "kafka": 2.0}
    )
    got = shares(before, after, wall_s=20.0)
    assert got["machine_busy_cores"] == 1.5
    assert got["machine_stolen_cores"] == 0.1
    assert got["stack_daemons_cores"] == {"kafka": 0.1, "postgres": 0.3}


def test_a_sample_of_this_machine_has_no_daemons_for_an_unused_run_dir(tmp_path: Path) -> None:
    taken = sample(tmp_path)
    assert taken.stack_s == {}
    assert 0 < taken.busy_s < taken.total_s
    assert 0 <= taken.steal_s <= taken.busy_s


def test_the_speed_probe_counts_operations_a_second() -> None:
    assert speed(0.03) > 0


def test_a_child_that_ended_counts_in_its_parents_cpu() -> None:
    """A PostgreSQL backend shorter than the bench's window is seen in neither sample: its time
    must reach the postmaster's figure once the postmaster has waited for it."""
    me = str(os.getpid())
    before, children_before = process_cpu(me), os.times()
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    after, children_after = process_cpu(me), os.times()
    assert before is not None
    assert after is not None
    children = (children_after.children_user + children_after.children_system) - (
        children_before.children_user + children_before.children_system
    )
    assert children >= 0.25
    assert after[1] - before[1] >= children - 0.05
