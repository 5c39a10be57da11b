"""Fixtures for reranker tests: a tiny random BERT and a first-stage run over the synthetic BEIR folder."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from peft_ir.data import BeirDataset, load_corpus, write_run


@pytest.fixture(scope="session")
def synthetic_runs(synthetic_beir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Word-overlap runs (top 20) for the train and test queries of the synthetic folder."""
    corpus = load_corpus(synthetic_beir / "corpus.jsonl")
    out = tmp_path_factory.mktemp("runs")
    paths = {}
    for split in ("train", "test"):
        queries = BeirDataset(synthetic_beir, split).queries()
        run = {}
        for qid, text in queries.items():
            q = set(text.split())
            scores = {d: len(q & set(doc.joined().split())) + random.Random(f"{qid}{d}").random() * 0.5
                      for d, doc in corpus.items()}
            run[qid] = dict(sorted(scores.items(), key=lambda kv: -kv[1])[:20])
        write_run(run, out / f"{split}.trec", tag="overlap")
        paths[split] = out / f"{split}.trec"
    return paths


@pytest.fixture(scope="session")
def tiny_ce_dir(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Path:
    """A tiny random BERT whose frozen pooler passes a usable signal (initializer_range 0.2, no dropout), so a
    few training steps of a small adapter visibly lower the loss (with std 0.02 the frozen random pooler makes
    every pair score alike and nothing learns in a test-sized run)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-ce")
    tok = AutoTokenizer.from_pretrained(minilm_path)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, initializer_range=0.2,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out
