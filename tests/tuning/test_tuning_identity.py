"""At initialisation every method except prefix and MAM leaves the frozen model's outputs unchanged."""

from __future__ import annotations

import copy

import torch

from peft_ir.tuning import TuningConfig, apply_tuning


def test_identity_on_real_minilm(minilm, minilm_batch, identity_variant: dict) -> None:
    with torch.no_grad():
        expected = copy.deepcopy(minilm)(**minilm_batch).last_hidden_state
        tuned = apply_tuning(minilm, TuningConfig(**identity_variant))
        got = tuned(**minilm_batch).last_hidden_state
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-5


def test_identity_on_tiny_models(tiny, identity_variant: dict, family: str, kind: str) -> None:
    batch = tiny.batch()
    expected = tiny.outputs(tiny.model(family, kind), batch)
    tuned = apply_tuning(tiny.model(family, kind), TuningConfig(**identity_variant))
    got = tiny.outputs(tuned, batch)
    assert (got - expected).abs().max().item() <= 1e-5


def test_tuned_model_is_the_same_object_and_keeps_working_inside_sentence_transformers(minilm_dir) -> None:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(minilm_dir, device="cpu")
    texts = ["parameter-efficient tuning", "dense retrieval with adapters"]
    before = st.encode(texts, convert_to_tensor=True)
    module = st[0]
    hf = getattr(module, "auto_model", None) or module.model
    returned = apply_tuning(hf, TuningConfig(method="lora"))
    assert returned is hf
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    after = st.encode(texts, convert_to_tensor=True)
    assert (after - before).abs().max().item() > 1e-4  # the wrapper now runs the tuned module


def test_added_modules_follow_the_models_eval_mode(tiny, variant: dict) -> None:
    """peft creates LoRA dropout in training mode; an eval model must stay deterministic after tuning."""
    model = apply_tuning(tiny.model("bert").eval(), TuningConfig(**variant))
    assert not any(m.training for m in model.modules())
    tiny.perturb(model)
    batch = tiny.batch()
    assert torch.equal(tiny.outputs(model, batch), tiny.outputs(model, batch))
