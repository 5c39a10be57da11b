"""Every registered method on every covered family (tiny random configs, tests/tiny_models.py TINY_CONFIGS).

One test per (variant, family) builds the model once and checks: the closed-form count equals the parameters that
require grad; the output equals the frozen model's at initialisation (all but prefix/MAM); one Adam step on a
fixed batch lowers the loss; save -> reload onto a fresh base gives identical outputs. The one combination that
cannot apply (prefixes on MPNet's own attention) is refused with a message saying why.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from peft_ir.errors import PeftIRError
from peft_ir.tuning import TuningConfig, apply_tuning, load_tuned, merge_tuned, save_tuned, trainable_parameters
from peft_ir.tuning.apply import config_parts
from peft_ir.tuning.arch import detect

DECODERS = {"llama", "qwen2", "qwen3", "mistral"}
NOT_IDENTITY = {"prefix", "mam"}
# The decoders' residual stream starts at the embeddings' scale (std 0.02, no norm after them), while parallel
# adapters and aside modules read normalised inputs: the same step moves it ~50x more, so they take a smaller one.
STEP_LR = {"decoder": 1e-5, "encoder": 1e-4}


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


def test_bitfit_adds_zero_biases_that_train_on_a_bias_free_llama(tiny) -> None:
    """Every projection of a Llama layer gets a zero bias that trains; the embeddings, the norms (RMSNorm, no bias)
    and the head stay as they were; the base's own weights stay frozen and out of the base state dict."""
    from peft_ir.tuning import base_state_dict

    model = tiny.model("llama", "cross")
    base_keys = set(model.state_dict())
    projections = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n]
    assert len(projections) == 14 and all(model.get_submodule(n).bias is None for n in projections)
    apply_tuning(model, TuningConfig(method="bitfit"))
    added = {f"{n}.bias" for n in projections}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == added | {"score.weight"}  # the head trains whole, as under every method
    assert all(torch.count_nonzero(model.get_parameter(n)) == 0 for n in added)
    assert set(model.state_dict()) == base_keys | added  # nothing else gained a bias (norms, embeddings, head)
    parts = {p.what: p.total for p in config_parts(detect(model), TuningConfig(method="bitfit"))}
    assert parts["added zero biases (14 Linears)"] == sum(model.get_submodule(n).out_features for n in projections)
    assert set(base_state_dict(model)) == base_keys  # what an export saves as the untouched base
    tiny.loss(model, tiny.batch()).backward()
    assert all(model.get_parameter(n).grad is not None for n in added)
    # a key bias shifts every score of a query alike, which softmax ignores: its gradient is zero by the maths
    assert all(torch.count_nonzero(model.get_parameter(n).grad) > 0 for n in added if ".k_proj." not in n)


@pytest.mark.parametrize("family, switches", [("llama", True), ("modernbert", True), ("qwen3", False)])
def test_bitfit_merge_turns_on_the_bias_switches(tiny, tmp_path: Path, family: str, switches: bool) -> None:
    """Merged, a model with added biases saves and reloads as a plain transformers model with the same outputs
    where its config has switches building those biases (Llama, ModernBERT); elsewhere the merge is refused."""
    model = apply_tuning(tiny.model(family), TuningConfig(method="bitfit"))
    tiny.perturb(model)
    batch = tiny.batch()
    expected = tiny.outputs(model, batch)
    if not switches:
        with pytest.raises(PeftIRError, match="no switch that builds exactly those .*would silently drop them"):
            merge_tuned(model)
        return
    merged = merge_tuned(model)
    assert merged.config.attention_bias is True and merged.config.mlp_bias is True
    merged.save_pretrained(tmp_path / "merged")
    reloaded, info = type(merged).from_pretrained(tmp_path / "merged", output_loading_info=True)
    assert not info["unexpected_keys"] and not info["missing_keys"]
    assert (tiny.outputs(reloaded.eval(), batch) - expected).abs().max().item() <= 1e-6
