"""`reranker.fuse_weight`: the re-ranker fused with its first stage is a run of its own, evaluated beside the
re-ranker alone, and the one the experiment is judged by; `peft-ir rerank --fuse-weight` does the same by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from peft_ir.cli import main
from peft_ir.data import ranked, read_run
from peft_ir.experiment import ConfigError, load_config
from peft_ir.experiment.pipeline import Pipeline
from tiny import write_yaml


def _config(beir: Path, model: Path, out: Path, **reranker: Any) -> dict[str, Any]:
    return {"name": "fz", "output": str(out), "data": {"beir": str(beir)},
            "retriever": {"model": str(model), "zero_shot": True, "normalize": True, "query_max_length": 16},
            "encode": {"batch_size": 32, "max_length": 32}, "search": {"hits": 20},
            "reranker": {"model": str(model), "zero_shot": True, "query_max_length": 8, "passage_max_length": 24,
                         "hits": 10, **reranker},
            "eval": {"measures": ["nDCG@10", "R@20"]}}


def test_fused_run_is_evaluated_beside_the_reranker_and_judged(tmp_path: Path, synthetic_beir: Path,
                                                               tiny_bert_dir: Path) -> None:
    path = write_yaml(tmp_path / "fz.yaml", _config(synthetic_beir, tiny_bert_dir, tmp_path / "runs", fuse_weight=0.5))
    pipeline = Pipeline(load_config(path), progress=False, echo=lambda _: None)
    metrics = pipeline.run()
    runs = metrics["sets"]["test"]["runs"]
    assert set(runs) == {"dense", "reranked", "reranked-fused"} and metrics["final"] == "reranked-fused"
    root = pipeline.dir.root
    dense, alone = read_run(root / "runs/test.dense.trec"), read_run(root / "runs/test.reranked.trec")
    fused = read_run(root / "runs/test.reranked-fused.trec")
    for qid, hits in fused.items():
        top = [d for d, _ in ranked(dense[qid], 10)]
        order = [d for d, _ in ranked(hits)]
        assert set(order[:10]) == set(top) and order[10:] == [d for d, _ in ranked(dense[qid])][10:]
    # the fused order is neither the re-ranker's nor the first stage's in general, and R@20 is the first stage's
    assert runs["reranked-fused"]["means"]["R@20"] == pytest.approx(runs["dense"]["means"]["R@20"])
    assert any([d for d, _ in ranked(fused[q], 10)] != [d for d, _ in ranked(alone[q], 10)] for q in fused)
    assert "| reranked-fused |" in (root / "report.md").read_text()


@pytest.mark.parametrize("weight", [0, 1, 1.5])
def test_a_weight_outside_0_1_is_refused_naming_the_key(weight: float, tmp_path: Path, synthetic_beir: Path,
                                                        tiny_bert_dir: Path) -> None:
    path = write_yaml(tmp_path / "fz.yaml", _config(synthetic_beir, tiny_bert_dir, tmp_path / "runs",
                                                    fuse_weight=weight))
    with pytest.raises(ConfigError, match=r"fz\.yaml:\d+: 'reranker\.fuse_weight': must lie strictly between 0"):
        load_config(path)


def test_cli_rerank_writes_the_fused_run_too(tmp_path: Path, synthetic_beir: Path, synthetic_runs: dict,
                                             tiny_bert_dir: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["rerank", "--run", str(synthetic_runs["test"]), "--topics", str(synthetic_beir), "--corpus",
            str(synthetic_beir), "--model", str(tiny_bert_dir), "--hits", "5", "--output", str(tmp_path / "r.trec")]
    assert main([*base, "--fuse-weight", "0.5"]) == 2
    assert "--fuse-weight and --fused-output go together" in capsys.readouterr().err
    assert main([*base, "--fuse-weight", "0.3", "--fused-output", str(tmp_path / "f.trec"), "--keep-rest"]) == 0
    first, fused = read_run(synthetic_runs["test"]), read_run(tmp_path / "f.trec")
    assert set(fused) == set(read_run(tmp_path / "r.trec"))
    for qid, hits in fused.items():
        assert set(hits) == set(first[qid])  # every first-stage hit kept, the top 5 re-ordered
