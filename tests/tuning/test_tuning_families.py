"""Every registered method on every covered family (tiny random configs, tests/tiny_models.py TINY_CONFIGS).

One test per (variant, family) builds the model once and checks: the closed-form count equals the parameters that
require grad; the output equals the frozen model's at initialisation (all but prefix/MAM); one Adam step on a
fixed batch lowers the loss; save -> reload onto a fresh base gives identical outputs. Methods that cannot apply
to a family are refused with a message saying why.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from peft_ir.errors import PeftIRError
from peft_ir.tuning import TuningConfig, apply_tuning, load_tuned, merge_tuned, save_tuned, trainable_parameters
from peft_ir.tuning.apply import config_parts
from peft_ir.tuning.arch import detect

NO_BIAS = {"modernbert", "llama", "qwen3", "mistral"}  # nothing for BitFit to train
DECODERS = {"llama", "qwen2", "qwen3", "mistral"}
NOT_IDENTITY = {"prefix", "mam"}
# The decoders' residual stream starts at the embeddings' scale (std 0.02, no norm after them), while parallel
# adapters and aside modules read normalised inputs: the same step moves it ~50x more, so they take a smaller one.
STEP_LR = {"decoder": 1e-5, "encoder": 1e-4}


def refusal(variant: dict, family: str) -> str | None:
    if variant["method"] == "bitfit" and family in NO_BIAS:
        return "has no bias terms"
    return None


def _task() -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 99, (8, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[4:, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}, torch.tensor([0, 1, 1, 0, 1, 0, 0, 1]), torch.randn(32, 2,
                                                                                                          generator=g)


def _loss(model: torch.nn.Module, task: tuple) -> torch.Tensor:
    """Cross-entropy of a fixed random probe on the mean-pooled states: only the encoder's states can lower it."""
    batch, labels, probe = task
    states = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
    return torch.nn.functional.cross_entropy(((states * mask).sum(1) / mask.sum(1)) @ probe, labels)


def test_every_method_on_every_family(tiny, tmp_path: Path, variant: dict, any_family: str) -> None:
    family = any_family
    config = TuningConfig(**variant)
    model = tiny.model(family)
    if (why := refusal(variant, family)) is not None:
        with pytest.raises(PeftIRError, match=why):
            apply_tuning(model, config)
        return
    batch = tiny.batch()
    base_out = tiny.outputs(model, batch)
    base_total = sum(p.numel() for p in model.parameters())
    predicted = sum(p.total for p in config_parts(detect(model), config))

    apply_tuning(model, config)
    trainable, total = trainable_parameters(model)
    assert (trainable, total) == (predicted, base_total)
    assert 0 < trainable < total or config.method == "full"
    gap = (tiny.outputs(model, batch) - base_out).abs().max().item()
    if config.method in NOT_IDENTITY:
        assert gap > 1e-4
    else:
        assert gap <= 1e-5, f"{family} {variant}: differs from the frozen model by {gap:.3g} at initialisation"

    task = _task()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=STEP_LR["decoder" if family in DECODERS else "encoder"])
    before = _loss(model, task)
    before.backward()
    off_path = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert all(n.startswith("pooler.") for n in off_path), off_path  # the loss reads the states, not the pooler
    optimizer.step()
    with torch.no_grad():
        after = _loss(model, task)
    assert after.item() < before.item(), f"{family} {variant}: {before.item():.6f} -> {after.item():.6f}"

    expected = tiny.outputs(model, batch)
    save_tuned(model, tmp_path / "ckpt", f"tiny-{family}")
    loaded = load_tuned(tiny.model(family), tmp_path / "ckpt")
    assert trainable_parameters(loaded) == (trainable, total)
    assert (tiny.outputs(loaded, batch) - expected).abs().max().item() <= 1e-6


@pytest.mark.parametrize("method", ["iaa-l", "lora"])
def test_cross_encoders_of_every_family(tiny, any_family: str, method: str) -> None:
    """The task head (a decoder's `score`, ModernBERT's head + classifier) trains whole on top of the method."""
    model = tiny.model(any_family, "cross")
    batch = tiny.batch()
    base_out = tiny.outputs(model, batch)
    config = TuningConfig(method=method)
    arch = detect(model)
    head = sum(p.numel() for _, m in arch.head for p in m.parameters())
    predicted = sum(p.total for p in config_parts(arch, config))
    apply_tuning(model, config)
    assert trainable_parameters(model)[0] == predicted > head > 0
    assert (tiny.outputs(model, batch) - base_out).abs().max().item() <= 1e-5


def test_lora_merges_on_every_family(tiny, any_family: str) -> None:
    """LoRA on the table's default targets folds into the base: same outputs, the base's parameter count."""
    batch = tiny.batch()
    model = apply_tuning(tiny.model(any_family), TuningConfig(method="lora", lora_r=4))
    targets = detect(model).default_lora_targets
    assert {n.rpartition(".lora_A")[0].rpartition(".")[2] for n, _ in model.named_parameters() if ".lora_A" in n} \
        == set(targets)
    tiny.perturb(model)
    before = tiny.outputs(model, batch)
    merged = merge_tuned(model)
    assert (tiny.outputs(merged, batch) - before).abs().max().item() <= 1e-5
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in tiny.model(any_family).parameters())
