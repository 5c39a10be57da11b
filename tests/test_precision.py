"""The compute precision of scoring (peft_ir.precision): bfloat16 on the CPU runs under autocast (close to float32,
not equal to it: the products really are bfloat16), it is recorded where its outputs are kept (the embeddings'
manifest, the score cache's key), float16 is refused on the CPU, and dev evaluation follows training's bf16."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from peft_ir.data.beir import Document
from peft_ir.errors import MismatchError, PeftIRError
from peft_ir.precision import autocast, check_dtype, torch_dtype
from peft_ir.reranker.config import CrossEncoderSpec
from peft_ir.reranker.model import CrossEncoder
from peft_ir.retriever.config import EncoderSpec
from peft_ir.retriever.encode import encode_corpus
from peft_ir.retriever.encoder import BiEncoder
from peft_ir.training.args import eval_autocast

TEXTS = ["the river runs under the old stone bridge", "a cloud of light over the tree", "alpha beta gamma delta"]


def test_precision_names_and_float16_on_the_cpu() -> None:
    assert torch_dtype("float32") is None and torch_dtype(None) is None
    assert torch_dtype("bfloat16") is torch.bfloat16 and torch_dtype("float16") is torch.float16
    check_dtype(torch.bfloat16, "cpu")
    check_dtype(torch.float16, "cuda:0")
    with pytest.raises(PeftIRError, match="float16 needs a GPU.*bfloat16"):
        check_dtype(torch.float16, "cpu")
    with autocast("cpu", None):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("cpu", torch.bfloat16):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


@pytest.mark.parametrize("native", [False, True])
def test_bfloat16_on_a_cpu_that_emulates_it_is_warned_once(native: bool, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """An AVX2 CPU emulates bfloat16, a training step 11x slower than float32 (bench/results/cpu_bf16.md): said
    once, by the first stage that computes in it, and never where the CPU has it natively or a GPU computes."""
    from peft_ir import precision
    from peft_ir.training.args import ScheduleConfig, common_trainer_args

    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: native)
    monkeypatch.setattr(precision, "_said_emulated", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "without native bfloat16" in r.getMessage()]

    with caplog.at_level(logging.WARNING, logger="peft_ir.precision"):
        check_dtype(None, "cpu")
        check_dtype(torch.bfloat16, "cuda:0")
        common_trainer_args(ScheduleConfig(train="x", output=str(tmp_path)), tmp_path, "eval_m")
        assert said() == []  # float32, a GPU, training without --bf16
        check_dtype(torch.bfloat16, "cpu")
        common_trainer_args(ScheduleConfig(train="x", output=str(tmp_path), bf16=True), tmp_path, "eval_m")
        assert [m.split(" in bfloat16")[0] for m in said()] == ([] if native else ["scoring"])  # once per process
        monkeypatch.setattr(precision, "_said_emulated", False)
        common_trainer_args(ScheduleConfig(train="x", output=str(tmp_path), bf16=True), tmp_path, "eval_m")
        assert [m.split(" in bfloat16")[0] for m in said()] == ([] if native else ["scoring", "training"])
    if not native:
        assert "precision: auto" in said()[0] and "float32 is faster" in said()[0]


def test_bfloat16_encoding_on_the_cpu_is_close_to_float32_and_recorded(cpu_only, tiny_bert_dir: Path,
                                                                       tmp_path: Path) -> None:
    spec = EncoderSpec(model=str(tiny_bert_dir), normalize=True, passage_max_length=32, query_max_length=16)
    fp32 = BiEncoder(spec, device="cpu")
    bf16 = BiEncoder(spec, device="cpu", dtype=torch.bfloat16)
    a, b = fp32.encode_passages(TEXTS), bf16.encode_passages(TEXTS)
    assert b.dtype == np.float32 and a.shape == b.shape
    assert not np.array_equal(a, b)  # bfloat16 products: not the float32 vectors
    assert (a * b).sum(1).min() > 0.99  # unit vectors pointing the same way
    assert all(p.dtype == torch.float32 for p in bf16.hf_model.parameters())  # autocast: the weights stay float32
    with pytest.raises(PeftIRError, match="float16 needs a GPU"):
        BiEncoder(spec, device="cpu", dtype=torch.float16)

    docs = [Document(id=f"d{i}", title="", text=t) for i, t in enumerate(TEXTS)]
    out = tmp_path / "emb"
    manifest = encode_corpus(bf16, docs, out, chunk_size=2, progress=False)
    assert manifest["compute_dtype"] == "bfloat16" and manifest["dtype"] == "float32"
    assert manifest["fingerprint"] == encode_corpus(fp32, docs, tmp_path / "emb32", progress=False)["fingerprint"]
    (out / "chunks" / "chunk-000001.npz").unlink()  # resuming in another precision would mix two kinds of vectors
    with pytest.raises(MismatchError, match="computed in bfloat16, not float32"):
        encode_corpus(fp32, docs, out, chunk_size=2, progress=False)
    assert json.loads((out / "encoder.json").read_text())["compute_dtype"] == "bfloat16"


def test_bfloat16_reranking_on_the_cpu_is_close_to_float32_and_keyed_apart(cpu_only, tiny_bert_dir: Path) -> None:
    spec = CrossEncoderSpec(model=str(tiny_bert_dir), query_max_length=8, passage_max_length=24, head="cosine")
    fp32 = CrossEncoder(spec, device="cpu")
    bf16 = CrossEncoder(spec, device="cpu", dtype=torch.bfloat16)
    queries = ["river bridge"] * len(TEXTS)
    a, b = np.array(fp32.score(queries, TEXTS)), np.array(bf16.score(queries, TEXTS))
    assert not np.array_equal(a, b) and np.abs(a - b).max() < 0.05 * np.abs(a).max()
    assert fp32.fingerprint() != bf16.fingerprint()  # a score cache never serves one precision's scores to the other
    assert fp32.fingerprint() == CrossEncoder(spec, device="cpu").fingerprint()
    with pytest.raises(PeftIRError, match="float16 needs a GPU"):
        CrossEncoder(spec, device="cpu", dtype=torch.float16)


@pytest.mark.parametrize(("bf16", "fp16", "dtype"), [(False, False, None), (True, False, torch.bfloat16)])
def test_dev_evaluation_follows_the_training_precision(bf16: bool, fp16: bool, dtype: torch.dtype | None) -> None:
    args = SimpleNamespace(bf16=bf16, fp16=fp16, device=torch.device("cpu"))
    with eval_autocast(args):
        assert torch.is_autocast_enabled("cpu") is (dtype is not None)
        if dtype is not None:
            assert torch.get_autocast_dtype("cpu") == dtype
