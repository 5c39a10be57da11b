"""The teacher-margin filter of `peft-ir mine`: exactly the candidates within the margin of (or above) the weakest
positive are dropped, the count is logged and printed, and the default margin applies when a teacher is given."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from peft_ir.cli import main
from peft_ir.data import Document, read_training, write_beir_qrels, write_corpus, write_queries, write_run
from peft_ir.data.examples import MiningStats, mine_negatives
from peft_ir.errors import PeftIRError

RUN = {"q1": {"d1": 9.0, "d3": 8.0, "d4": 7.0, "d5": 6.0, "d6": 5.0, "d2": 4.0, "d7": 3.0},
       "q2": {"d3": 2.0, "d4": 1.0}}
QRELS = {"q1": {"d1": 1, "d2": 2, "d7": 0}, "q2": {"d9": 1}}
# q1's positives score 5 and 3: the weakest is 3. q2's positive has no score (not in the corpus, say).
SCORES = {"q1": {"d1": 5.0, "d2": 3.0, "d3": 2.5, "d4": 2.0, "d5": -1.0, "d6": 3.5, "d7": 1.0},
          "q2": {"d3": 9.0, "d4": 9.0}}


@pytest.mark.parametrize(("margin", "kept", "dropped"), [
    (1.0, ["d4", "d5", "d7"], 2),          # threshold 2: d3 (2.5) and d6 (3.5) go, d4 (2.0, equal) stays
    (0.0, ["d3", "d4", "d5", "d7"], 1),    # threshold 3: only d6, which the teacher puts above a positive
    (-10.0, ["d3", "d4", "d5", "d6", "d7"], 0),
    (5.0, [], 5),                          # threshold -2: everything
])
def test_the_filter_drops_exactly_the_candidates_within_the_margin(margin: float, kept: list[str], dropped: int,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "peft_ir")
    stats = MiningStats()
    out = mine_negatives(RUN, QRELS, depth_to=10, num=10, scores=SCORES, margin=margin, stats=stats)
    assert out["q1"] == kept  # rank order kept when nothing is sampled away
    assert out["q2"] == ["d3", "d4"]  # no scored positive: left alone
    assert (stats.candidates, stats.dropped, stats.queries) == (5, dropped, 1)
    assert f"dropped {dropped} of 5 candidates" in caplog.text


def test_without_scores_nothing_is_filtered_and_a_gap_in_the_scores_is_refused() -> None:
    assert mine_negatives(RUN, QRELS, depth_to=10, num=10)["q1"] == ["d3", "d4", "d5", "d6", "d7"]
    holes = {"q1": {k: v for k, v in SCORES["q1"].items() if k != "d5"}}
    with pytest.raises(PeftIRError, match="'d5' has no teacher score"):
        mine_negatives(RUN, QRELS, depth_to=10, num=10, scores=holes)


@pytest.fixture
def beir_and_runs(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "beir"
    write_corpus([Document(f"d{i}", "", f"text {i}") for i in range(1, 8)], root / "corpus.jsonl")
    write_queries({"q1": "first"}, root / "queries.jsonl")
    write_beir_qrels({"q1": {"d1": 1}}, root / "qrels" / "train.tsv")
    a, b = tmp_path / "a.trec", tmp_path / "b.trec"
    write_run({"q1": {"d2": 6.0, "d3": 5.0, "d1": 4.0, "d4": 3.0, "d5": 2.0}}, a)
    write_run({"q1": {"d1": 1.0, "d2": 0.0}}, b)
    return {"beir": root, "a": a, "b": b}


def test_mine_with_a_fusion_teacher_uses_the_default_margin(beir_and_runs: dict[str, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    """Fused (1/2 each): run a min-max d2 1, d3 .75, d1 .5, d4 .25, d5 0; run b d1 1, d2 0 (the rest absent: 0).
    So the positive d1 .75, then d2 .5, d3 .375, d4 .125, d5 0: with margin 0 none is above the positive; with
    margin 0.3 the threshold is .45 and d2 goes."""
    out = tmp_path / "mined.jsonl"
    args = ["mine", "--dataset", str(beir_and_runs["beir"]), "--run", str(beir_and_runs["a"]), "--window", "1", "5",
            "--num", "10", "--teacher", f"fusion:{beir_and_runs['a']},{beir_and_runs['b']}", "--output", str(out),
            "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "margin 0) dropped 0 of 4 candidates" in printed
    scores = tmp_path / "mined.scored.jsonl"
    assert scores.is_file() and (tmp_path / "mined.scored.jsonl.teacher.json").is_file()
    assert [p["score"] for p in json.loads(scores.read_text())["passages"]] == [0.75, 0.5, 0.375, 0.125, 0.0]
    (ex,) = read_training(out)
    assert ex.negatives == ["text 2", "text 3", "text 4", "text 5"]
    written = scores.stat().st_mtime_ns
    assert main([*args, "--margin", "0.3"]) == 0
    assert scores.stat().st_mtime_ns == written  # the teacher's scores are reused, not recomputed
    assert "margin 0.3) dropped 1 of 4 candidates" in capsys.readouterr().out
    (ex,) = read_training(out)
    assert ex.negatives == ["text 3", "text 4", "text 5"]


def test_teacher_settings_need_a_teacher(beir_and_runs: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    base = ["mine", "--dataset", str(beir_and_runs["beir"]), "--run", str(beir_and_runs["a"]), "--output",
            str(tmp_path / "m.jsonl")]
    assert main([*base, "--margin", "0.5"]) == 2
    assert "--margin needs --teacher" in capsys.readouterr().err
    assert main([*base, "--teacher", f"fusion:{beir_and_runs['a']},{beir_and_runs['b']}", "--window", "5", "2"]) == 2
    assert "1 <= from <= to" in capsys.readouterr().err
    assert not (tmp_path / "m.scored.jsonl").exists()  # refused before any scoring
