"""The demo's live view of a batch: a progress bar per stage with its rate, and the stage that
holds the most cards waiting (the current bottleneck), redrawn from audit's reconciliation view
(rich's Progress; on a console that is not a terminal only the last frame is printed)."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

# (audit's count, the stage that produces it, the count of cards it loses there)
FLOW: Final = (
    ("prepared", "keymgmt   prepared", None),
    ("encoded", "electrical encoded", "spoiled_electrical"),
    ("printed", "graphical printed", "spoiled_graphical"),
    ("qa_passed", "qa        passed", "qa_failed"),
    ("packed", "fulfillment packed", None),
    ("dispatched", "fulfillment dispatched", None),
)


class RateColumn(ProgressColumn):
    """Cards per second over the last half minute of updates."""

    def render(self, task: Task) -> Text:
        speed = task.speed or 0.0
        return Text(f"{speed:5.1f} cards/s", style="cyan")


def waiting(counts: Mapping[str, int]) -> dict[str, int]:
    """Cards that reached the stage before each one and are not through it (nor lost there)."""
    found: dict[str, int] = {}
    before = counts.get("ordered", 0)
    for key, _, lost in FLOW:
        done = counts.get(key, 0)
        found[key] = max(before - done - (counts.get(lost, 0) if lost else 0), 0)
        before = done
    return found


def bottleneck(counts: Mapping[str, int]) -> str | None:
    """The stage with the most cards waiting, or None when nothing waits."""
    queue = waiting(counts)
    stage = max(queue, key=lambda key: queue[key], default=None)
    if stage is None or queue[stage] == 0:
        return None
    label = next(label for key, label, _ in FLOW if key == stage)
    return f"{label.split()[0]} ({queue[stage]} waiting)"


class StageView:
    """`with StageView(cards) as view: ... view.show(reconciliation)`."""

    def __init__(self, total: int, console: Console | None = None) -> None:
        self.total = total
        self.progress = Progress(
            TextColumn("{task.description:<24}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            console=console,
            speed_estimate_period=30.0,
        )
        self.tasks: dict[str, TaskID] = {
            key: self.progress.add_task(label, total=total) for key, label, _ in FLOW
        }
        self.status = self.progress.add_task("batch", total=None, start=False)

    def __enter__(self) -> StageView:
        self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def show(self, view: Mapping[str, Any]) -> None:
        counts = {k: v for k, v in view.get("counts", {}).items() if isinstance(v, int)}
        for key, task in self.tasks.items():
            self.progress.update(task, completed=counts.get(key, 0))
        losses = sum(counts.get(lost, 0) for _, _, lost in FLOW if lost)
        neck = bottleneck(counts)
        status = f"batch {view.get('status', '?')}"
        status += f", lost {losses}" if losses else ""
        status += f"; bottleneck: {neck}" if neck else ""
        self.progress.update(self.status, description=status)
