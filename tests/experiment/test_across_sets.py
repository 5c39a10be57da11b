"""Several test sets in one run (a model judged zero-shot on several collections): one table per set and one
across them, per run kind: each set's nDCG@10 and their unweighted mean."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peft_ir.cli import main
from peft_ir.experiment.evaluation import across_sets
from tiny import write_yaml


def test_run_over_two_test_sets_prints_and_reports_the_mean(tmp_path: Path, synthetic_beir: Path,
                                                            tiny_bert_dir: Path, capsys: pytest.CaptureFixture
                                                            ) -> None:
    beir = str(synthetic_beir)
    cfg = {"name": "two", "output": str(tmp_path / "runs"),
           "data": {"corpus": beir, "test": [{"name": "a", "topics": beir, "qrels": beir, "split": "test"},
                                             {"name": "b", "topics": beir, "qrels": beir, "split": "train"}]},
           "retriever": {"model": str(tiny_bert_dir), "zero_shot": True, "normalize": True, "query_max_length": 16},
           "encode": {"batch_size": 32, "max_length": 32}, "search": {"hits": 20},
           "eval": {"measures": ["R@20", "nDCG@10"]}}
    path = write_yaml(tmp_path / "two.yaml", cfg)
    assert main(["run", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "runs/two/metrics.json").read_text())
    a = metrics["sets"]["a"]["runs"]["dense"]["means"]["nDCG@10"]
    b = metrics["sets"]["b"]["runs"]["dense"]["means"]["nDCG@10"]
    assert a != b  # two different query sets
    measure, rows = across_sets(metrics)
    assert measure == "nDCG@10"  # preferred over the first listed measure, when every set has it
    assert rows == {"dense": {"a": a, "b": b, "mean of 2": pytest.approx((a + b) / 2)}}
    assert "nDCG@10 across test sets" in out and f"| dense | {a:.4f} | {b:.4f} | {(a + b) / 2:.4f} |" in out
    report = (tmp_path / "runs/two/report.md").read_text()
    assert "## Across test sets (nDCG@10" in report and f"{(a + b) / 2:.4f}" in report


def test_one_test_set_or_no_shared_measure_gives_no_table() -> None:
    one = {"sets": {"a": {"measures": ["nDCG@10"], "runs": {"dense": {"means": {"nDCG@10": 0.5}}}}}}
    assert across_sets(one) is None
    two = {"sets": {"a": {"measures": ["nDCG@10"], "runs": {"dense": {"means": {"nDCG@10": 0.5}}}},
                    "b": {"measures": ["RR@10"], "runs": {"dense": {"means": {"RR@10": 0.4}}}}}}
    assert across_sets(two) is None
    two["sets"]["b"] = {"measures": ["RR@10", "R@100"], "runs": {"dense": {"means": {"RR@10": 0.4, "R@100": 0.9}},
                                                                  "bm25": {"means": {"RR@10": 0.1, "R@100": 0.2}}}}
    two["sets"]["a"] = {"measures": ["R@100", "RR@10"], "runs": {"dense": {"means": {"R@100": 0.8, "RR@10": 0.3}}}}
    measure, rows = across_sets(two)
    assert measure == "R@100" and set(rows) == {"dense"}  # the first shared measure; kinds every set has
    assert rows["dense"]["mean of 2"] == pytest.approx(0.85)
