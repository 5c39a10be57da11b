"""`peft-ir run` end to end on the embedded SciFact with the newer backbones: a tiny random Qwen3 bi-encoder
(RepLLaMA style: last-token pooling of an appended EOS, query/passage prefixes) trained with LoRA, and a tiny random
ModernBERT cross-encoder trained with IAA-L, each a few steps; then the whole corpus is encoded, indexed and
searched, the dense top 10 re-ranked and every run evaluated. The numbers mean nothing; the pipeline is the point."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from peft_ir.cli import main
from peft_ir.data import BeirDataset, read_run
from tiny import write_yaml

HITS, RERANK_HITS = 20, 10


def _config(scifact: Path, retriever: Path, reranker: Path, output: Path) -> dict[str, Any]:
    """Pooling and append_eos are left to their defaults: a decoder must get last-token pooling and the EOS."""
    common = dict(batch_size=4, max_steps=3, eval_steps=3, save_steps=3, logging_steps=1, dev_queries=8)
    return {
        "name": "modern", "seed": 7, "output": str(output), "data": {"beir": str(scifact)},
        "retriever": {"model": str(retriever), "method": "lora", "tuning": {"lora_r": 4}, "normalize": True,
                      "query_prefix": "query: ", "passage_prefix": "passage: ", "num_negatives": 0,
                      "query_max_length": 16, "passage_max_length": 48, "dev_corpus": 40, "lr": 5e-3, **common},
        "encode": {"batch_size": 64, "max_length": 48},
        "search": {"hits": HITS},
        "reranker": {"model": str(reranker), "method": "iaa-l", "tuning": {"r": 4, "ar": 4},
                     "negatives": "first_stage", "negatives_window": [1, HITS], "negatives_pool": 8, "group_size": 4,
                     "dev_candidates": 8, "query_max_length": 16, "passage_max_length": 48, "hits": RERANK_HITS,
                     "lr": 1e-2, **common},
        "eval": {"measures": ["nDCG@10", f"R@{HITS}"]},
    }


@pytest.mark.slow
def test_qwen3_retriever_and_modernbert_reranker_run_end_to_end(scifact: Path, tiny_decoder_dir,  # type: ignore
                                                                tiny_modernbert_dir: Path, tmp_path: Path,
                                                                one_torch_thread: None) -> None:
    qwen3 = tiny_decoder_dir("qwen3")
    cfg = write_yaml(tmp_path / "modern.yaml", _config(scifact, qwen3, tiny_modernbert_dir, tmp_path / "runs"))
    assert main(["run", str(cfg), "--no-progress"]) == 0
    root = tmp_path / "runs" / "modern"

    # both models trained on the chosen backbones, with the chosen methods
    for part, key, model, method, base_class in (
            ("retriever", "encoder", qwen3, "lora", "Qwen3Model"),
            ("reranker", "cross_encoder", tiny_modernbert_dir, "iaa-l", "ModernBertForSequenceClassification")):
        summary = json.loads((root / part / "summary.json").read_text())
        assert summary["method"] == method and summary["steps"] == 3, part
        assert 0 < summary["trainable"] < summary["total"], part
        assert summary["config"][key]["model"] == str(model), part
        saved = json.loads((root / part / "adapter" / "tuning_config.json").read_text())
        assert saved["config"]["method"] == method and saved["base"]["class"] == base_class, part
        assert saved["base"]["name_or_path"] == str(model), part

    # the retriever trained and encoded as a decoder: last token, EOS appended, prefixes; the index agrees
    encoder = json.loads((root / "retriever" / "encoder.json").read_text())
    manifest = json.loads((root / "embeddings" / "manifest.json").read_text())
    assert manifest["model_path"] == str(qwen3) and manifest["num_docs"] == 5183  # the whole corpus
    for spec in (encoder, manifest):
        assert spec["pooling"] == "lasttoken" and spec["append_eos"] is True
        assert spec["query_prefix"] == "query: " and spec["passage_prefix"] == "passage: "

    # dense search: every test query, the configured depth, over the whole corpus
    test = BeirDataset(scifact, "test")
    dense = read_run(root / "runs" / "test.dense.trec")
    assert set(dense) == set(test.qrels()) and len(dense) == 300
    assert all(len(hits) == HITS for hits in dense.values())
    assert len({d for hits in dense.values() for d in hits}) > HITS  # not one list for every query

    # re-ranking rescored the dense top 10 of each query with the cross-encoder's own scores
    reranked = read_run(root / "runs" / "test.reranked.trec")
    assert set(reranked) == set(dense)
    rescored = reordered = 0
    for qid, hits in reranked.items():
        top = sorted(dense[qid], key=lambda d: (-dense[qid][d], d))[:RERANK_HITS]
        new_top = sorted(hits, key=lambda d: (-hits[d], d))[:RERANK_HITS]
        assert set(new_top) == set(top), qid
        rescored += all(hits[d] != pytest.approx(dense[qid][d]) for d in top)
        reordered += new_top != top
    assert rescored == len(reranked) and reordered > 0

    # metrics: finite nDCG@10 for both run kinds, the re-ranked run final
    metrics = json.loads((root / "metrics.json").read_text())
    runs = metrics["sets"]["test"]["runs"]
    assert set(runs) == {"dense", "reranked"} and metrics["final"] == "reranked"
    for kind, r in runs.items():
        assert math.isfinite(r["means"]["nDCG@10"]) and len(r["per_query"]["nDCG@10"]) == 300, kind
    # ModernBERT has no pooler (its head trains whole, as a classifier does): the log claims none
    assert "the pooler of" not in (root / "log.txt").read_text()
    resolved = yaml.safe_load((root / "config.resolved.yaml").read_text())
    assert resolved["retriever"]["model"] == str(qwen3) and resolved["reranker"]["model"] == str(tiny_modernbert_dir)
