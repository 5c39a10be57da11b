"""Fingerprint values pinned: adapters store their base's sha256_sampled, score caches and embedding manifests are
keyed on these hashes, so a refactor must keep every value bit-identical. Inputs are fixed by hand (weights from
integer arithmetic, exact in every dtype used), not by a random init that a library upgrade could change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from peft_ir.fingerprint import (
    base_fingerprint, file_hash, manifest_fingerprint, model_fingerprint, pair_hash, text_id,
)
from peft_ir.rewrite.cache import cache_key


def _fill(model: nn.Module) -> nn.Module:
    """Every parameter, in name order, gets (k % 997) / 64 - 7 for a running k: exact in float32, float16, bfloat16."""
    k = 0
    with torch.no_grad():
        for _, p in sorted(model.named_parameters(), key=lambda item: item[0]):
            n = p.numel()
            p.copy_(((torch.arange(k, k + n) % 997).float() / 64 - 7).reshape(p.shape))
            k += n
    return model


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(700, 128)      # 89,600 elements: sampled with a stride of 2
        self.dense = nn.Linear(128, 16)


class _WithHead(nn.Module):
    """An encoder under `base_model` plus a head, the shape base_fingerprint looks through."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = _Encoder()
        self.head = nn.Linear(16, 1)

    @property
    def base_model(self) -> nn.Module:
        return self.encoder


def _tiny_bert_cross() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                     max_position_embeddings=64, num_labels=1)
    return _fill(BertForSequenceClassification(cfg).eval())


BASE = {
    "float32": "06e0dfd0fb03238e725f0a1508c1387ddb5068aaeb92f6977287fb1ee1a35879",
    "float16": "53dba0b7a227a2dea40afa2eca0f4b01e33984f4781b54714b1d19a9ca3dc739",  # raw bytes, not widened
    "bfloat16": "8b3016642806704a5c69fa0032be96b67e66f5c6b3a2f4ed88d4d8b40d6f1751",
}
BERT_BASE = "e7d46a53d3ae75906fea4864d07ed0a85c400bd8577351b8609270351ea8df55"
MODEL = {
    ("float32", ""): "1e53e43edd47be1880eea77fb64d3229676388aed4177e01a4e35a94d3b0d466",
    ("float32", "32/192"): "1f520c3d8c405c0330d76a8398f692283456a0316c434faf759a602f3236b66b",
    ("float16", "8/24"): "d15349700243b414bb12255cce25706e3ddfff33bb336caf696056f33ce2a331",
    ("bfloat16", "8/24"): "149693aa4f9db397e12598430a00df75f2186806259ae35d867f7829a2ee77ef",
}
BERT_MODEL = "2677e15cd0daf6cbc3c73507a6105f995493cf6e5052c7ec017f839d2232108d"
BERT_MODEL_SAMPLE_7 = "66c4afcaa7a7833741a4cd551b747d7bced5493d6df70cf0578c1de62ccb631f"


@pytest.mark.parametrize("dtype", sorted(BASE))
def test_base_fingerprint_is_pinned(dtype: str) -> None:
    assert base_fingerprint(_fill(_Encoder()).to(getattr(torch, dtype))) == BASE[dtype]


def test_base_fingerprint_looks_through_base_model_and_skips_the_head() -> None:
    # the same weights under the same names as _Encoder's, seen through `base_model`: the head is not hashed
    assert base_fingerprint(_fill(_WithHead())) == BASE["float32"]
    assert base_fingerprint(_tiny_bert_cross()) == BERT_BASE


def test_base_fingerprint_of_meta_weights_is_none() -> None:
    with torch.device("meta"):
        assert base_fingerprint(_Encoder()) is None


@pytest.mark.parametrize(("dtype", "extra"), sorted(MODEL))
def test_model_fingerprint_is_pinned(dtype: str, extra: str) -> None:
    assert model_fingerprint(_fill(_Encoder()).to(getattr(torch, dtype)), extra) == MODEL[(dtype, extra)]


def test_model_fingerprint_covers_every_parameter() -> None:
    assert model_fingerprint(_tiny_bert_cross(), "8/24") == BERT_MODEL
    assert model_fingerprint(_tiny_bert_cross(), "8/24", sample=7) == BERT_MODEL_SAMPLE_7


def test_text_hashes_are_pinned(tmp_path: Path) -> None:
    assert text_id("the moon's gravity pulls the oceans") == "e2d4682ca287"
    assert pair_hash("what causes tides", "the moon's gravity pulls the oceans") == "09e48cbb7d2e9014"
    assert cache_key("model-x temperature=0", "Rewrite: tides") == \
        "4c2f6229aacad054dd36753a13500791475bf3b34c07802ef4eac9c276620e21"
    manifest = {"base_hash": "b" * 64, "adapter_hash": None, "pooling": "mean", "normalize": True,
                "query_prefix": "q: ", "passage_prefix": "", "dim": 384, "model": "ignored", "passage_max_length": 9}
    assert manifest_fingerprint(manifest) == "4f61354758e8ff97"
    folder = tmp_path / "adapter"
    (folder / "sub").mkdir(parents=True)
    (folder / "tuning_config.json").write_text('{"a": 1}\n')
    (folder / "sub" / "w.bin").write_bytes(bytes(range(256)))
    assert file_hash(folder) == "a8e3bc4a55e15024"
    assert file_hash(folder / "tuning_config.json") == "6d3e080ec68e4592"
