"""A bfloat16 checkpoint trains with float32 master weights (tuning/precision.py): under every method each trainable
parameter is float32 while the frozen base keeps bfloat16, the forward returns the base's dtype, an AdamW step far
below bfloat16's resolution lands, and save -> load on the bfloat16 base gives the same outputs."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import torch

from peft_ir.tuning import TuningConfig, apply_tuning, load_tuned, merge_tuned, save_tuned
from peft_ir.tuning.precision import MASTERS_ATTR

BF16 = torch.bfloat16
LR = 1e-6  # a bfloat16 weight of magnitude 0.05 is spaced 2.4e-4 apart: a step of 1e-6 would round away


def _bf16(tiny, family: str, kind: str) -> torch.nn.Module:  # type: ignore[no-untyped-def]
    """A tiny random model as transformers 5 loads a bfloat16 checkpoint: every weight bfloat16."""
    return tiny.model(family, kind).to(BF16)


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_trainable_parameters_are_float32_and_the_frozen_base_stays_bfloat16(tiny, variant: dict, family: str,
                                                                            kind: str) -> None:
    base = _bf16(tiny, family, kind)
    batch = tiny.batch()
    expected = tiny.outputs(base, batch)
    tuned = apply_tuning(copy.deepcopy(base), TuningConfig(**variant))
    full = variant["method"] == "full"
    trainable = [(n, p.dtype) for n, p in tuned.named_parameters() if p.requires_grad]
    frozen = [(n, p.dtype) for n, p in tuned.named_parameters() if not p.requires_grad]
    assert trainable and all(dtype == torch.float32 for _, dtype in trainable), trainable
    assert all(dtype == (torch.float32 if full else BF16) for _, dtype in frozen), frozen
    assert full or frozen  # a PEFT method leaves the base frozen, in bfloat16

    out = tiny.outputs(tuned, batch)
    assert out.shape == expected.shape and out.dtype == (torch.float32 if full else BF16)
    if variant["method"] not in ("prefix", "mam", "full"):  # zero-initialised: exactly the bfloat16 base
        assert torch.equal(out, expected)
    after = [(n, p.dtype) for n, p in tuned.named_parameters() if p.requires_grad]
    assert after == trainable  # the float32 masters are back in place after the forward


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_one_adamw_step_below_bfloat16_resolution_lands(tiny, variant: dict, family: str, kind: str) -> None:
    """Adam's first step moves each weight by about the learning rate (lr * g / |g|): in float32 a 1e-6 step on
    weights of magnitude ~0.05 shows; a bfloat16 weight would not have moved (or jumped by its spacing)."""
    tuned = apply_tuning(_bf16(tiny, family, kind), TuningConfig(**variant))
    tiny.perturb(tuned)  # W_up, LoRA B away from zero, so every trainable weight gets a gradient
    params = {n: p for n, p in tuned.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in params.items()}
    optimiser = torch.optim.AdamW(params.values(), lr=LR, weight_decay=0.0)
    tiny.loss(tuned, tiny.batch()).float().backward()
    optimiser.step()
    moved = 0
    for name, p in params.items():
        assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32, name
        clear = p.grad.abs() > 1e-6  # Adam's step is lr * |g| / (|g| + eps): about lr where |g| >> eps
        if clear.any():
            step = (p.detach() - before[name])[clear].abs()
            assert torch.allclose(step, torch.full_like(step, LR), rtol=0.2), name
            moved += 1
    assert moved >= len(params) / 2


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_save_and_load_on_the_bfloat16_base_give_identical_outputs(tiny, tmp_path: Path, variant: dict,
                                                                  family: str, kind: str) -> None:
    batch = tiny.batch()
    tuned = apply_tuning(_bf16(tiny, family, kind), TuningConfig(**variant))
    tiny.perturb(tuned, std=0.05)
    expected = tiny.outputs(tuned, batch)
    assert not torch.equal(expected, tiny.outputs(_bf16(tiny, family, kind), batch))
    save_tuned(tuned, tmp_path / "ckpt", f"tiny-{family}")
    loaded = load_tuned(_bf16(tiny, family, kind), tmp_path / "ckpt")
    assert torch.equal(tiny.outputs(loaded, batch), expected)
    assert all(p.dtype == torch.float32 for p in loaded.parameters() if p.requires_grad)


@pytest.mark.parametrize("method", ["lora", "bitfit"])
def test_merging_puts_the_trained_weights_back_in_bfloat16(tiny, method: str) -> None:
    """A merged model is the base's: bfloat16 throughout, no master hooks left, outputs close to the unmerged."""
    tuned = apply_tuning(_bf16(tiny, "llama", "cross"), TuningConfig(method=method))
    tiny.perturb(tuned)
    batch = tiny.batch()
    expected = tiny.outputs(tuned, batch)
    merged = merge_tuned(tuned)
    assert all(p.dtype == BF16 for p in merged.parameters())
    assert not any(hasattr(m, MASTERS_ATTR) or m._forward_pre_hooks for m in merged.modules())
    out = tiny.outputs(merged, batch)
    assert out.dtype == BF16 and torch.allclose(out.float(), expected.float(), atol=0.05, rtol=0.05)


def test_full_fine_tuning_of_a_bfloat16_checkpoint_says_it_trains_in_float32(tiny, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="peft_ir.tuning.methods.full"):
        tuned = apply_tuning(_bf16(tiny, "llama", "encoder"), TuningConfig(method="full"))
    assert "full fine-tuning of a bfloat16 checkpoint: training in float32 (master weights)" in caplog.text
    assert all(p.dtype == torch.float32 for p in tuned.parameters())
    with caplog.at_level(logging.INFO, logger="peft_ir.tuning.methods.full"):
        caplog.clear()
        apply_tuning(tiny.model("llama"), TuningConfig(method="full"))
    assert "training in float32" not in caplog.text  # a float32 checkpoint: nothing to say, nothing changed


def test_a_float32_base_gets_no_master_hooks(tiny, variant: dict, kind: str) -> None:
    tuned = apply_tuning(tiny.model("bert", kind), TuningConfig(**variant))
    assert all(p.dtype == torch.float32 for p in tuned.parameters())
    assert not any(hasattr(m, MASTERS_ATTR) for m in tuned.modules())
