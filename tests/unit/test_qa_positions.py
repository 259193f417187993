"""A QA station's positions: which readers they take, what a station refuses, its status, and
the print check's spool reading (one pass, only this card's files, identical bytes pass)."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from pathlib import Path
from typing import Any, cast

import pytest
from PIL import Image

from services.qa.checker import QaMachine
from services.qa.print_check import print_image_problem, printed_files
from services.qa.settings import QaSettings
from services.qa.station import QaStation


def position(reader: str, station: str = "qa-1") -> QaMachine:
    return QaMachine(
        reader=reader,
        pcsc=cast(Any, None),
        feeder=cast(Any, None),
        keymgmt=cast(Any, None),
        spool_dir=Path("/nonexistent"),
        transaction=cast(Any, None),
        station=station,
    )


def readers_json(tmp_path: Path, count: int) -> str:
    path = tmp_path / "readers.json"
    readers = [{"name": f"VPCD {n}", "port": 35963 + n} for n in range(count)]
    path.write_text(json.dumps(readers))
    return str(path)


def test_the_positions_default_to_every_reader_after_the_encoding_stations_four(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BUREAU_QA_READERS", raising=False)
    monkeypatch.delenv("BUREAU_QA_READER", raising=False)
    settings = QaSettings(environment="test", pcsc_readers=readers_json(tmp_path, 9))
    assert settings.reader_names() == [f"VPCD {n}" for n in range(4, 9)]
    few = QaSettings(environment="test", pcsc_readers=readers_json(tmp_path, 4))
    with pytest.raises(ValueError, match="no QA reader"):
        few.reader_names()


def test_named_readers_win_and_a_reader_named_twice_is_refused() -> None:
    settings = QaSettings(environment="test", qa_readers=" A , B ,C")
    assert settings.reader_names() == ["A", "B", "C"]
    assert QaSettings(environment="test", qa_reader="A").reader_names() == ["A"]
    with pytest.raises(ValueError, match="named twice"):
        QaSettings(environment="test", qa_reader="A", qa_readers="B,A").reader_names()


def test_a_station_refuses_no_positions_two_names_or_a_shared_reader() -> None:
    with pytest.raises(ValueError, match="at least one position"):
        QaStation([])
    with pytest.raises(ValueError, match="share its name"):
        QaStation([position("A"), position("B", station="qa-2")])
    with pytest.raises(ValueError, match="one QA position only"):
        QaStation([position("A"), position("A")])


def test_the_station_status_sums_its_positions_and_shows_each() -> None:
    a, b = position("A"), position("B")
    a.status.passed, b.status.passed, b.status.failed = 3, 4, 1
    a.status.activity = "checking card x"
    b.status.last_problem = "chip: no answer"
    status = QaStation([a, b]).status()
    assert (status["passed"], status["failed"], status["machine_faults"]) == (7, 1, 0)
    assert status["activity"] == "1 of 2 positions checking"
    assert status["last_problem"] == "chip: no answer"
    assert [p["reader"] for p in status["positions"]] == ["A", "B"]


def face(name_width: int) -> bytes:
    """A white face with a black bar where the name is, `name_width` pixels long."""
    image = Image.new("RGB", (120, 80), "white")
    image.paste((0, 0, 0), (10, 10, 10 + name_width, 20))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_the_spool_is_read_for_this_card_only(tmp_path: Path) -> None:
    card, other = uuid.uuid4(), uuid.uuid4()
    for job, who in ((1, other), (2, card), (3, other)):
        (tmp_path / f"{job}-card-{who}.png").write_bytes(b"doc")
        (tmp_path / f"{job}-card-{who}.prn").write_bytes(b"out")
    (tmp_path / f"4-card-{card}.png.tmp").write_bytes(b"partial")
    documents, outputs = printed_files(tmp_path, card)
    assert documents == [tmp_path / f"2-card-{card}.png"]
    assert outputs == [tmp_path / f"2-card-{card}.prn"]


def test_an_output_identical_to_the_document_passes_and_any_other_is_compared(
    tmp_path: Path,
) -> None:
    card = uuid.uuid4()
    expected = face(40)
    digest = hashlib.sha256(expected).hexdigest()
    (tmp_path / f"5-card-{card}.png").write_bytes(expected)
    (tmp_path / f"5-card-{card}.prn").write_bytes(expected)
    assert print_image_problem(tmp_path, card, digest) is None
    (tmp_path / f"5-card-{card}.prn").write_bytes(b"not an image")
    assert "not a readable image" in str(print_image_problem(tmp_path, card, digest))
    (tmp_path / f"5-card-{card}.prn").write_bytes(face(90))  # a longer name
    assert print_image_problem(tmp_path, card, digest) is not None
