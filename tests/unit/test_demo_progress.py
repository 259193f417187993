"""make demo's live view: a bar per stage with its rate, and the stage where cards wait most."""

from __future__ import annotations

import io

from rich.console import Console

from demo.progress import StageView, bottleneck, waiting


def test_cards_waiting_at_each_stage_count_what_reached_it_less_what_passed_or_was_lost() -> None:
    counts = {"ordered": 50, "prepared": 50, "encoded": 40, "spoiled_electrical": 2, "printed": 30}
    assert waiting(counts) == {
        "prepared": 0,
        "encoded": 8,
        "printed": 10,
        "qa_passed": 30,
        "packed": 0,
        "dispatched": 0,
    }
    assert bottleneck(counts) == "qa (30 waiting)"


def test_nothing_waiting_means_no_bottleneck() -> None:
    done = dict.fromkeys(("ordered", "prepared", "encoded", "printed"), 5)
    done |= dict.fromkeys(("qa_passed", "packed", "dispatched"), 5)
    assert bottleneck(done) is None
    assert bottleneck({}) is None


def test_the_view_draws_every_stage_with_its_count_rate_and_the_bottleneck() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120)
    with StageView(10, console=console) as view:
        view.show({"status": "open", "counts": {"ordered": 10, "prepared": 10, "encoded": 3}})
        view.show(
            {
                "status": "open",
                "counts": {"ordered": 10, "prepared": 10, "encoded": 6, "qa_failed": 1},
            }
        )
    text = out.getvalue()
    assert "keymgmt   prepared" in text
    assert "10/10" in text
    assert "6/10" in text
    assert "cards/s" in text
    assert "bottleneck: graphical (6 waiting)" in text
    assert "lost 1" in text
