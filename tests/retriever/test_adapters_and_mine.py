"""Encoding with a saved adapter (merged where the maths allows), and `peft-ir mine`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from peft_ir.cli import main
from peft_ir.data import read_training, write_run
from peft_ir.data.examples import mine_negatives
from peft_ir.errors import MismatchError
from peft_ir.indexing.dense import DenseIndex, build_index
from peft_ir.retriever.config import EncoderSpec
from peft_ir.retriever.encode import encode_corpus
from peft_ir.retriever.encoder import BiEncoder
from peft_ir.tuning import TuningConfig, apply_tuning, save_tuned, tuning_state

TEXTS = ["alpha beta gamma", "river stone cloud and tree", "a much longer passage " * 5]


def _saved_adapter(model_dir: Path, out: Path, config: TuningConfig) -> Path:
    enc = BiEncoder(EncoderSpec(model=str(model_dir)), device="cpu")
    tuned = apply_tuning(enc.hf_model, config)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in tuned.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))  # a trained-looking adapter, not the identity
    save_tuned(tuned, out, str(model_dir))
    return out


@pytest.mark.parametrize("method,merged", [("lora", True), ("iaa-l", False)])
def test_adapter_encoding(tiny_bert_dir: Path, tmp_path: Path, method: str, merged: bool) -> None:
    path = _saved_adapter(tiny_bert_dir, tmp_path / "adapter", TuningConfig(method=method))
    base = BiEncoder(EncoderSpec(model=str(tiny_bert_dir)), device="cpu")
    fast = BiEncoder(EncoderSpec(model=str(tiny_bert_dir), adapter=str(path)), device="cpu")
    exact = BiEncoder(EncoderSpec(model=str(tiny_bert_dir), adapter=str(path)), device="cpu", merge=False)
    assert (tuning_state(fast.hf_model) is None) == merged  # merged models carry no tuning modules
    a, b = fast.encode_passages(TEXTS), exact.encode_passages(TEXTS)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert not np.allclose(a, base.encode_passages(TEXTS), atol=1e-3)  # the adapter changes the vectors
    assert fast.manifest()["adapter_hash"] and fast.manifest()["base_hash"] == base.manifest()["base_hash"]


def test_index_refuses_queries_from_another_adapter(tiny_bert_dir: Path, tmp_path: Path) -> None:
    base = BiEncoder(EncoderSpec(model=str(tiny_bert_dir)), device="cpu")
    from peft_ir.data import Document

    encode_corpus(base, [Document(f"d{i}", "", t) for i, t in enumerate(TEXTS)], tmp_path / "emb", progress=False)
    build_index(tmp_path / "emb", tmp_path / "idx", progress=False)
    path = _saved_adapter(tiny_bert_dir, tmp_path / "adapter", TuningConfig(method="lora"))
    tuned = BiEncoder(EncoderSpec(model=str(tiny_bert_dir), adapter=str(path)), device="cpu")
    with pytest.raises(MismatchError, match="adapter_hash"):
        DenseIndex(tmp_path / "idx").check_encoder(tuned.manifest())


def test_mine_negatives_skips_positives_and_respects_window() -> None:
    run = {"q1": {f"d{i}": 100.0 - i for i in range(1, 21)}}
    qrels = {"q1": {"d3": 1, "d5": 0}}
    neg = mine_negatives(run, qrels, depth_from=2, depth_to=6, num=10)
    assert neg["q1"] == ["d2", "d4", "d5", "d6"]  # ranks 2-6 minus the relevant d3; grade 0 is a negative
    assert len(mine_negatives(run, qrels, depth_from=1, depth_to=20, num=3, seed=7)["q1"]) == 3


def test_cli_mine_writes_a_training_file(synthetic_beir: Path, tmp_path: Path) -> None:
    run = {f"q{i}": {f"d{j}": float(-abs(i - j)) for j in range(60)} for i in range(40)}
    write_run(run, tmp_path / "first.trec")
    out = tmp_path / "train.jsonl"
    assert main(["mine", "--run", str(tmp_path / "first.trec"), "--dataset", str(synthetic_beir), "--output", str(out),
                 "--window", "1", "10", "--num", "4"]) == 0
    examples = list(read_training(out))
    assert len(examples) == 40 and all(len(e.negatives) == 4 and len(e.positives) == 1 for e in examples)
    assert all(e.positives[0] not in e.negatives for e in examples)
