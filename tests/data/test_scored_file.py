"""The teacher-annotated ("scored") training file: the contract between `peft-ir annotate` and the distillation
losses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peft_ir.data import TrainingExample, detect_shape, read_training, write_training
from peft_ir.errors import InputError


def _example() -> TrainingExample:
    return TrainingExample("what is x", ["x is a letter", "x, the letter"], ["y is not"], "q1",
                           positive_scores=[9.5, 7.0], negative_scores=[-1.25],
                           positive_ids=["d1", "d2"], negative_ids=["d9"])


def test_round_trip_keeps_scores_ids_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "scored.jsonl"
    write_training([_example()], path, "scored")
    assert detect_shape(path) == "scored"
    line = json.loads(path.read_text())
    assert [(p["docid"], p["label"], p["score"]) for p in line["passages"]] == [("d1", 1, 9.5), ("d2", 1, 7.0),
                                                                                ("d9", 0, -1.25)]
    (back,) = read_training(path)
    assert back == _example() and back.scored


def test_graded_labels_and_titles(tmp_path: Path) -> None:
    path = tmp_path / "scored.jsonl"
    path.write_text(json.dumps({"query": "q", "passages": [
        {"docid": "a", "title": "T", "text": "body", "label": 2, "score": 1},
        {"docid": "b", "text": "other", "label": 0, "score": 0.5}]}) + "\n")
    (ex,) = read_training(path)
    assert ex.positives == ["T body"] and ex.positive_scores == [1.0] and ex.negative_scores == [0.5]


def test_writing_unscored_examples_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no teacher scores"):
        write_training([TrainingExample("q", ["p"], ["n"], "q7")], tmp_path / "x.jsonl", "scored")
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize(("passage", "field"), [
    ({"docid": "a", "text": "t", "label": 1}, "passages[1].score"),
    ({"docid": "a", "text": "t", "label": 1, "score": "high"}, "passages[1].score"),
    ({"docid": "a", "text": "t", "label": 1, "score": float("nan")}, "passages[1].score"),
    ({"docid": "a", "text": "t", "score": 1.0}, "passages[1].label"),
    ({"docid": 3, "text": "t", "label": 1, "score": 1.0}, "passages[1].docid"),
    ({"docid": "a", "label": 1, "score": 1.0}, "passages[1].text"),
    ("just text", "passages[1]"),
])
def test_malformed_lines_name_file_line_and_field(tmp_path: Path, passage: object, field: str) -> None:
    good = {"docid": "g", "text": "fine", "label": 1, "score": 2.0}
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"query": "ok", "passages": [good]}) + "\n"
                    + json.dumps({"query": "q", "passages": [good, passage]}) + "\n")
    with pytest.raises(InputError) as err:
        list(read_training(path))
    assert err.value.line == 2 and err.value.field == field and str(path) in str(err.value)


def test_a_line_without_a_positive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"query": "q", "passages": [{"docid": "a", "text": "t", "label": 0, "score": 1}]}) + "\n")
    with pytest.raises(InputError, match="no positive"):
        list(read_training(path))
