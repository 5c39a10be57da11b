"""After one backward pass exactly the method's parameters (and a cross-encoder's head) have gradients.

The expected set is derived from parameter names here, independently of the library's requires_grad flags.
"""

from __future__ import annotations

import re

import pytest
import torch

from peft_ir.tuning import TuningConfig, apply_tuning
from peft_ir.tuning.arch import detect

OWN = {
    "bitfit": r"(^|\.)bias$",
    "adapter": r"\.tuning_adapter_(attn|ffn)\.",
    "parallel": r"\.tuning_parallel\.",
    "prefix": r"\.tuning_prefix\.",
    "lora": r"\.lora_[AB]\.",
    "mam": r"\.tuning_(prefix|parallel)\.",
    "iaa-s": r"\.tuning_adapter_(attn|ffn)\.",
    "iaa-l": r"\.tuning_adapter_(attn|ffn)\.",
    "iaa-m": r"\.tuning_adapter_(attn|ffn)\.",
}
ASIDE = {
    "layer": r"\.layer\.\d+\.tuning_aside\.",
    "sublayer": r"\.layer\.\d+\.tuning_aside_(attn|ffn)\.",
    "model": r"^(\w+\.)?(encoder|transformer)\.tuning_aside\.",
}
HEAD = r"^(classifier|pre_classifier)\."
POOLER = r"^bert\.pooler\."  # trains with the head only when the config says so (frozen when pretrained)
# Gradients that are zero by the maths, whatever the weights: softmax ignores a shift shared by all keys.
STRUCTURALLY_ZERO = r"(attention\.self\.key\.bias|attention\.k_lin\.bias)$"


def expected_trainable(names: list[str], config: TuningConfig, cross: bool) -> set[str]:
    if config.method == "full":
        return set(names)
    patterns = [OWN[config.method]]
    if config.aside:
        patterns.append(ASIDE[config.aside])
    if cross:
        patterns.append(HEAD)
        if config.train_pooler:
            patterns.append(POOLER)
    return {n for n in names if any(re.search(p, n) for p in patterns)}


def test_exactly_the_methods_parameters_get_gradients(tiny, variant: dict, family: str, kind: str) -> None:
    config = TuningConfig(**variant)
    model = apply_tuning(tiny.model(family, kind), config)
    tiny.perturb(model)  # so that zero-initialised up-projections do not zero their partners' gradients
    model.train()
    tiny.loss(model, tiny.batch()).backward()
    names = [n for n, _ in model.named_parameters()]
    expected = expected_trainable(names, config, kind == "cross")
    assert expected, "the method must train something"
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == expected
    for name, p in model.named_parameters():
        if name in expected and not re.search(STRUCTURALLY_ZERO, name):
            assert torch.count_nonzero(p.grad) > 0, f"{name} got an all-zero gradient"


def _grads(model: torch.nn.Module, batch: dict, loss) -> dict[str, torch.Tensor]:
    model.zero_grad()
    loss(model, batch).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("base", ["bert", "llama"])
def test_gradient_checkpointing_gives_the_same_gradients(tiny, variant: dict, base: str) -> None:
    """Layers recompute their forward in backward; every hook pair must sit on one side of that boundary. Enabled as
    the Trainer enables it (`--gradient-checkpointing`): non-reentrant, every layer."""
    if base == "llama" and variant.get("train_pooler"):
        pytest.skip("Llama has no pooler")
    model = apply_tuning(tiny.model(base), TuningConfig(**variant))
    tiny.perturb(model)
    model.train()
    for module in model.modules():  # deterministic forward passes
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    batch = tiny.batch()
    plain_loss = tiny.loss(model, batch).detach().item()
    plain = _grads(model, batch, tiny.loss)
    model.activation_checkpointing_enable()
    assert all(slots.layer.gradient_checkpointing for slots in detect(model).layers)
    assert tiny.loss(model, batch).detach().item() == pytest.approx(plain_loss, rel=1e-6)  # recomputed in backward
    checkpointed = _grads(model, batch, tiny.loss)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(checkpointed) == set(plain) == trainable  # the gradients reach every trainable parameter
    for name, grad in plain.items():
        assert torch.allclose(checkpointed[name], grad, atol=1e-6), name


def test_a_deep_copy_is_an_independent_tuned_model(tiny, variant: dict) -> None:
    """Hooks are bound methods of the added modules, so a copy runs its own modules, not the original's."""
    import copy

    batch = tiny.batch()
    model = apply_tuning(tiny.model("distilbert", "cross"), TuningConfig(**variant))
    tiny.perturb(model)
    reference = tiny.outputs(model, batch)
    clone = copy.deepcopy(model)
    assert torch.equal(tiny.outputs(clone, batch), reference)
    tiny.perturb(clone, seed=9, std=0.5)
    assert not torch.equal(tiny.outputs(clone, batch), reference)
    assert torch.equal(tiny.outputs(model, batch), reference)
