"""Save -> load into a fresh base -> identical outputs; small files; a different base is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from peft_ir.errors import MismatchError, PeftIRError
from peft_ir.fingerprint import base_fingerprint
from peft_ir.tuning import (
    TuningConfig,
    apply_tuning,
    budget_config,
    load_tuned,
    save_tuned,
    trainable_parameters,
)

SETUPS = [("bert", "encoder"), ("bert", "cross"), ("roberta", "cross"), ("distilbert", "encoder")]


def _scramble_head(model: torch.nn.Module) -> None:
    """Give a fresh cross-encoder a different head, so a passing test proves the head was loaded."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("classifier", "pre_classifier")):
                p.normal_(0, 1.0)


@pytest.mark.parametrize("family, kind", SETUPS)
def test_save_load_round_trip(tiny, tmp_path: Path, variant: dict, family: str, kind: str) -> None:
    batch = tiny.batch()
    config = TuningConfig(**variant)
    tuned = apply_tuning(tiny.model(family, kind), config)
    tiny.perturb(tuned)
    expected = tiny.outputs(tuned, batch)
    base_out = tiny.outputs(tiny.model(family, kind), batch)
    assert (expected - base_out).abs().max().item() > 1e-4  # not trivially the base
    save_tuned(tuned, tmp_path / "ckpt", f"tiny-{family}")

    fresh = tiny.model(family, kind)
    _scramble_head(fresh)
    loaded = load_tuned(fresh, tmp_path / "ckpt")
    assert loaded.peft_ir_tuning.config == config
    assert trainable_parameters(loaded) == trainable_parameters(tuned)
    assert (tiny.outputs(loaded, batch) - expected).abs().max().item() <= 1e-6

    meta = json.loads((tmp_path / "ckpt" / "tuning_config.json").read_text())
    assert meta["config"] == config.to_dict()
    assert meta["base"]["name_or_path"] == f"tiny-{family}"
    assert meta["base"]["sha256_sampled"] == base_fingerprint(tiny.model(family, kind))


def test_only_trainable_weights_are_saved(tiny, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    model = apply_tuning(tiny.model("bert", "cross"), TuningConfig(method="iaa-l", r=4, ar=4))
    save_tuned(model, tmp_path / "ckpt")
    saved = load_file(str(tmp_path / "ckpt" / "tuning_weights.safetensors"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(saved) == trainable
    assert sum(t.numel() for t in saved.values()) == trainable_parameters(model)[0]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["tuning_config.json", "tuning_weights.safetensors"]


@pytest.mark.parametrize("method", ["adapter", "parallel", "prefix", "lora", "mam", "iaa-s", "iaa-l", "iaa-m"])
def test_minilm_checkpoints_at_half_a_percent_are_under_1mb(minilm, minilm_batch, tmp_path: Path, method: str) -> None:
    config = budget_config(minilm, method, "0.5%")
    model = apply_tuning(minilm, config)
    trainable, total = trainable_parameters(model)
    assert abs(trainable / total - 0.005) < 0.001
    out = save_tuned(model, tmp_path / method, "sentence-transformers/all-MiniLM-L6-v2")
    size = sum(f.stat().st_size for f in out.iterdir())
    assert size < 1_000_000, f"{method}: {size} bytes"
    assert size > 4 * trainable  # float32 weights are really in there


def test_loading_onto_a_different_base_names_both(tiny, tmp_path: Path) -> None:
    model = apply_tuning(tiny.model("bert", seed=0), TuningConfig(method="lora"))
    save_tuned(model, tmp_path / "ckpt", "tiny-bert-seed0")
    other = tiny.model("bert", seed=1)
    with pytest.raises(MismatchError) as err:
        load_tuned(other, tmp_path / "ckpt")
    message = str(err.value)
    assert "tiny-bert-seed0" in message and "tiny-bert-encoder-seed1" in message
    assert base_fingerprint(tiny.model("bert", seed=0)) in message
    assert base_fingerprint(other) in message
    assert not hasattr(other, "peft_ir_tuning")  # refused before touching the model


def test_loading_onto_another_model_class_is_refused(tiny, tmp_path: Path) -> None:
    save_tuned(apply_tuning(tiny.model("bert"), TuningConfig(method="adapter")), tmp_path / "ckpt")
    with pytest.raises(MismatchError, match="BertModel.*BertForSequenceClassification"):
        load_tuned(tiny.model("bert", "cross"), tmp_path / "ckpt")


def test_fingerprint_is_deterministic_and_ignores_the_head(tiny) -> None:
    a, b = tiny.model("bert", "cross"), tiny.model("bert", "cross")
    _scramble_head(b)
    assert base_fingerprint(a) == base_fingerprint(b) == base_fingerprint(tiny.model("bert"))
    with torch.no_grad():
        a.bert.encoder.layer[1].output.dense.weight[3, 5] += 1.0  # one changed weight is caught
    assert base_fingerprint(a) != base_fingerprint(b)


def test_a_corrupt_or_foreign_checkpoint_is_a_clean_error(tiny, tmp_path: Path) -> None:
    model = apply_tuning(tiny.model("bert"), TuningConfig(method="adapter", r=2))
    path = save_tuned(model, tmp_path / "ckpt")
    meta = json.loads((path / "tuning_config.json").read_text())
    meta["config"]["bottleneck"] = 3
    (path / "tuning_config.json").write_text(json.dumps(meta))
    with pytest.raises(PeftIRError, match="unknown tuning config key.*bottleneck"):
        load_tuned(tiny.model("bert"), path)
    with pytest.raises(PeftIRError, match="not a peft-ir tuning checkpoint"):
        load_tuned(tiny.model("bert"), tmp_path)


def test_untuned_models_cannot_be_saved_or_tuned_twice(tiny, tmp_path: Path) -> None:
    with pytest.raises(PeftIRError, match="apply_tuning"):
        save_tuned(tiny.model("bert"), tmp_path / "x")
    model = apply_tuning(tiny.model("bert"), TuningConfig(method="bitfit"))
    with pytest.raises(PeftIRError, match="already tuned"):
        apply_tuning(model, TuningConfig(method="bitfit"))


def test_load_trainable_restores_weights_into_a_tuned_model(tiny, tmp_path: Path) -> None:
    from peft_ir.tuning import load_trainable

    batch = tiny.batch()
    model = apply_tuning(tiny.model("bert", "cross"), TuningConfig(method="lora", lora_r=2))
    tiny.perturb(model)
    expected = tiny.outputs(model, batch)
    save_tuned(model, tmp_path / "ckpt")
    tiny.perturb(model, seed=3)  # training went on
    assert not torch.equal(tiny.outputs(model, batch), expected)
    load_trainable(model, tmp_path / "ckpt")
    assert torch.equal(tiny.outputs(model, batch), expected)
    other = apply_tuning(tiny.model("bert", "cross"), TuningConfig(method="lora", lora_r=3))
    with pytest.raises(MismatchError, match="lora_r"):
        load_trainable(other, tmp_path / "ckpt")
    # the same method on other base weights: resuming would continue another model's training
    base = tiny.model("bert", "cross")
    with torch.no_grad():
        next(p for n, p in base.named_parameters() if "embeddings" in n).add_(0.5)
    moved = apply_tuning(base, TuningConfig(method="lora", lora_r=2))
    with pytest.raises(MismatchError, match=r"was trained from base .* this training starts from"):
        load_trainable(moved, tmp_path / "ckpt")
    # full fine-tuning changes the base itself as it trains: its checkpoint still resumes on the base it started from
    full = apply_tuning(tiny.model("bert", "cross"), TuningConfig(method="full"))
    tiny.perturb(full)
    save_tuned(full, tmp_path / "full")
    load_trainable(apply_tuning(tiny.model("bert", "cross"), TuningConfig(method="full")), tmp_path / "full")
