"""A console a person can read: during training one progress bar with the latest loss and dev metric in its
postfix; the Trainer's raw metric dicts go to metrics.jsonl (and log.txt under `peft-ir run`), not to the console."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peft_ir.cli import main


def _train(beir: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "retriever", "--train", str(beir), "--output", str(out), "--model", str(model), "--normalize",
            "--passage-max-length", "32", "--query-max-length", "16", "--method", "lora", "--batch-size", "8",
            "--num-negatives", "0", "--max-steps", "4", "--eval-steps", "2", "--save-steps", "2",
            "--logging-steps", "1", "--dev-queries", "8", "--dev-corpus", "40", *extra]


@pytest.mark.parametrize("progress", ["--progress", "--no-progress"])
def test_training_prints_no_metric_dicts(progress: str, synthetic_beir: Path, tiny_bert_dir: Path, tmp_path: Path,
                                         capfd: pytest.CaptureFixture) -> None:
    assert main(_train(synthetic_beir, tiny_bert_dir, tmp_path / "r", progress)) == 0
    out, err = capfd.readouterr()
    assert "{'loss'" not in out + err and "'eval_dev_nDCG@10'" not in out + err
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert sum("loss" in x for x in lines) == 4 and sum("eval_dev_nDCG@10" in x for x in lines) == 3
    if progress == "--progress":
        assert "loss=" in err and "dev=" in err  # the bar's postfix
    else:  # no bar at all: neither ours nor transformers' weight loading nor sentence-transformers' model card
        assert "%|" not in err and "Loading weights" not in err and "Computing widget" not in err, err[-2000:]


def test_run_writes_the_metric_events_to_its_log(tmp_path: Path, synthetic_beir: Path, tiny_bert_dir: Path,
                                                 capfd: pytest.CaptureFixture) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiment"))
    from tiny import tiny_config, write_yaml

    cfg = tiny_config(synthetic_beir, tiny_bert_dir, tmp_path / "runs")
    cfg["reranker"] = None
    path = write_yaml(tmp_path / "tiny.yaml", cfg)
    assert main(["run", str(path), "--no-progress"]) == 0
    out, err = capfd.readouterr()
    assert "{'loss'" not in out + err and '"loss"' not in out + err
    assert "%|" not in err, err[-2000:]  # no bar from any stage: training, weight loading, encoding, re-ranking
    log = (tmp_path / "runs" / "tiny" / "log.txt").read_text()
    assert "peft_ir.metrics" in log and '"loss"' in log
