"""The other first stages: BM25 (with BM25 hard negatives for training), fusion, and a given run file."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from peft_ir.data import read_run
from peft_ir.errors import PeftIRError
from peft_ir.experiment import load_config
from peft_ir.experiment.pipeline import Pipeline
from peft_ir.indexing.fusion import fuse
from tiny import tiny_config, write_yaml


def test_bm25_negatives_and_fusion(synthetic_beir: Path, tiny_bert_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("pyserini", reason="BM25 needs pyserini (a declared dependency)")
    path = write_yaml(tmp_path / "fused.yaml", tiny_config(
        synthetic_beir, tiny_bert_dir, tmp_path / "runs", name="fused",
        retriever={"negatives": "bm25", "negatives_window": [2, 10], "num_negatives": 1},
        fuse={"runs": ["dense", "bm25"], "method": "rrf", "hits": 15},
        reranker={"zero_shot": True, "method": None, "tuning": {}, "negatives": None},
        bm25={"threads": 1}))
    lines: list[str] = []
    metrics = Pipeline(load_config(path), progress=False, echo=lines.append).run()
    titles = [line.split("] ", 1)[1].split(":")[0] for line in lines if line.startswith("[") and "done in" in line]
    assert titles == ["BM25 index of the corpus", "BM25 run of the training queries (hard negatives)",
                      "train retriever", "encode the corpus (max length 32)", "index (FAISS Flat)",
                      "dense search, top 20", "BM25 search, top 20", "fuse dense + bm25 (rrf)", "re-rank the top 10",
                      "evaluate"]
    root = tmp_path / "runs" / "fused"
    # the retriever mined its negatives from the BM25 run of the 40 training queries, at the window's depth
    summary = json.loads((root / "retriever" / "summary.json").read_text())
    assert summary["config"]["negatives_run"] == str(root / "runs" / "train.bm25.trec")
    train_run = read_run(root / "runs" / "train.bm25.trec")
    assert len(train_run) == 40 and max(len(h) for h in train_run.values()) == 10
    # the fused run is RRF of the dense and BM25 runs, and it is what was re-ranked
    dense, bm25 = read_run(root / "runs/test.dense.trec"), read_run(root / "runs/test.bm25.trec")
    fused = read_run(root / "runs/test.fused.trec")
    expected = fuse([dense, bm25], "rrf", k=60.0, hits=15)
    assert {q: set(h) for q, h in fused.items()} == {q: set(h) for q, h in expected.items()}
    reranked = read_run(root / "runs/test.reranked.trec")
    assert all(set(reranked[q]) == set(fused[q]) for q in reranked)  # top 10 re-ranked, the rest kept
    assert set(metrics["sets"]["test"]["runs"]) == {"dense", "bm25", "fused", "reranked"}
    assert metrics["final"] == "reranked"


def test_given_run_is_reranked_by_a_zero_shot_model(tiny_run: dict[str, Any], synthetic_beir: Path,
                                                    tiny_bert_dir: Path, tmp_path: Path) -> None:
    given = tiny_run["root"] / "runs" / "test.dense.trec"
    cfg = tiny_config(synthetic_beir, tiny_bert_dir, tmp_path / "runs", name="given", first_stage="run",
                      retriever=None, reranker={"zero_shot": True, "method": None, "tuning": {}, "negatives": None})
    cfg["data"] = {"corpus": str(synthetic_beir),
                   "test": [{"name": "synthetic", "topics": str(synthetic_beir), "qrels": str(synthetic_beir),
                             "split": "test", "run": str(given)}]}
    lines: list[str] = []
    metrics = Pipeline(load_config(write_yaml(tmp_path / "given.yaml", cfg)), progress=False,
                       echo=lines.append).run()
    assert [line for line in lines if "done in" in line][0].startswith("[1/2] re-rank the top 10")
    runs = metrics["sets"]["synthetic"]["runs"]
    assert runs["run"]["file"] == str(given)
    assert runs["run"]["means"] == tiny_run["metrics"]["sets"]["test"]["runs"]["dense"]["means"]
    assert not (tmp_path / "runs" / "given" / "retriever").exists()


def test_ivf_index_is_built_and_searched_with_the_configured_nprobe(synthetic_beir: Path, tiny_bert_dir: Path,
                                                                    tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="peft_ir")
    cfg = tiny_config(synthetic_beir, tiny_bert_dir, tmp_path / "runs", name="ivf", reranker=None,
                      retriever={"zero_shot": True, "method": None, "tuning": {}}, index={"factory": "IVF4,Flat",
                                                                                        "nprobe": 3},
                      search={"device": "cpu"})
    metrics = Pipeline(load_config(write_yaml(tmp_path / "ivf.yaml", cfg)), progress=False, echo=lambda _: None).run()
    root = tmp_path / "runs" / "ivf"
    assert json.loads((root / "index" / "manifest.json").read_text())["nprobe"] == 3
    assert f"{root / 'index'}: searching IVF4,Flat with nprobe 3" in caplog.text
    assert f"{root / 'index'}: searching on faiss-cpu (device cpu asked for)" in caplog.text  # search.device
    assert set(metrics["sets"]["test"]["runs"]) == {"dense"}


def test_an_input_edited_in_place_after_stages_used_it_is_refused_on_resume(synthetic_beir: Path,
                                                                            tiny_bert_dir: Path,
                                                                            tmp_path: Path) -> None:
    # finished stages are judged by their outputs: a corrected qrels file would leave the old evaluation "done"
    import os
    import shutil

    beir = tmp_path / "beir"
    shutil.copytree(synthetic_beir, beir)
    cfg = tiny_config(beir, tiny_bert_dir, tmp_path / "runs", name="zs", reranker=None,
                      retriever={"zero_shot": True, "method": None, "tuning": {}})
    path = write_yaml(tmp_path / "zs.yaml", cfg)
    Pipeline(load_config(path), progress=False, echo=lambda _: None).run()
    record = json.loads((tmp_path / "runs" / "zs" / "inputs.json").read_text())
    qrels = beir / "qrels" / "test.tsv"
    assert str(qrels.resolve()) in record and str((beir / "corpus.jsonl").resolve()) in record
    stamp = qrels.stat().st_mtime_ns
    os.utime(qrels, ns=(stamp + 10**9, stamp + 10**9))  # touched, the same bytes: resumes
    Pipeline(load_config(path), progress=False, echo=lambda _: None).run()
    lines = qrels.read_text().splitlines()
    qrels.write_text("\n".join(lines[:-1]) + "\n")  # a judgment removed in place
    with pytest.raises(PeftIRError, match=r"test\.tsv changed since .*zs began"):
        Pipeline(load_config(path), progress=False, echo=lambda _: None).run()
