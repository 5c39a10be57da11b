"""LoRA merges into the base with no extra modules; LoRA checkpoints load with plain peft; others refuse to merge."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from peft.tuners.tuners_utils import BaseTunerLayer

from peft_ir.errors import PeftIRError
from peft_ir.tuning import TuningConfig, apply_tuning, merge_tuned, save_tuned, trainable_parameters


def _perturb_lora(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name or name.startswith(("classifier", "pre_classifier")):
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


def test_lora_merge_on_minilm_keeps_outputs_and_leaves_no_extra_modules(minilm, minilm_batch) -> None:
    base_keys = set(minilm.state_dict())
    base_count = sum(p.numel() for p in minilm.parameters())
    base_types = [type(m) for m in minilm.modules()]
    model = apply_tuning(minilm, TuningConfig(method="lora", target_modules=["query", "key", "value", "dense"]))
    _perturb_lora(model)
    with torch.no_grad():
        before = model(**minilm_batch).last_hidden_state
    merged = merge_tuned(model)
    with torch.no_grad():
        after = merged(**minilm_batch).last_hidden_state
    assert (after - before).abs().max().item() <= 1e-5
    assert not any(isinstance(m, BaseTunerLayer) for m in merged.modules())
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert sum(p.numel() for p in merged.parameters()) == base_count
    assert set(merged.state_dict()) == base_keys
    assert [type(m) for m in merged.modules()] == base_types
    assert not hasattr(merged, "peft_ir_tuning") and not hasattr(merged, "peft_config")


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_lora_merge_on_cross_encoders(tiny, family: str) -> None:
    batch = tiny.batch()
    model = apply_tuning(tiny.model(family, "cross"), TuningConfig(method="lora", lora_r=4))
    _perturb_lora(model)
    before = tiny.outputs(model, batch)
    merged = merge_tuned(model)
    assert (tiny.outputs(merged, batch) - before).abs().max().item() <= 1e-5
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in tiny.model(family, "cross").parameters())


def test_bitfit_merge_is_in_place(tiny) -> None:
    batch = tiny.batch()
    model = apply_tuning(tiny.model("bert"), TuningConfig(method="bitfit"))
    tiny.perturb(model)
    before = tiny.outputs(model, batch)
    merged = merge_tuned(model)
    assert torch.equal(tiny.outputs(merged, batch), before)
    assert trainable_parameters(merged)[0] == 0


@pytest.mark.parametrize(
    "config, why",
    [
        ({"method": "adapter"}, "non-linearity"),
        ({"method": "prefix"}, "extra attention positions"),
        ({"method": "iaa-l"}, "aside"),
        ({"method": "lora", "aside": "layer"}, "aside module"),
        ({"method": "mam"}, "cannot be folded"),
    ],
)
def test_methods_that_cannot_merge_say_why(tiny, config: dict, why: str) -> None:
    model = apply_tuning(tiny.model("bert"), TuningConfig(**config))
    with pytest.raises(PeftIRError, match=why):
        merge_tuned(model)


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft calls it
@pytest.mark.parametrize("family, kind", [("bert", "encoder"), ("bert", "cross"), ("distilbert", "cross")])
def test_lora_checkpoint_loads_with_plain_peft(tiny, tmp_path: Path, family: str, kind: str) -> None:
    from peft import PeftModel

    batch = tiny.batch()
    model = apply_tuning(tiny.model(family, kind), TuningConfig(method="lora", lora_r=4))
    _perturb_lora(model)
    expected = tiny.outputs(model, batch)
    save_tuned(model, tmp_path / "lora", f"tiny-{family}")

    fresh = tiny.model(family, kind)
    with torch.no_grad():  # a different head: only the checkpoint's head can give the expected logits
        for name, p in fresh.named_parameters():
            if name.startswith(("classifier", "pre_classifier")):
                p.normal_(0, 1.0)
    plain = PeftModel.from_pretrained(fresh, str(tmp_path / "lora")).eval()
    assert (tiny.outputs(plain, batch) - expected).abs().max().item() <= 1e-5
    assert plain.peft_config["default"].base_model_name_or_path == f"tiny-{family}"


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft calls it
def test_minilm_lora_checkpoint_loads_with_plain_peft(minilm, minilm_batch, tmp_path: Path) -> None:
    from peft import PeftModel

    fresh = copy.deepcopy(minilm)
    model = apply_tuning(minilm, TuningConfig(method="lora"))
    _perturb_lora(model)
    with torch.no_grad():
        expected = model(**minilm_batch).last_hidden_state
        save_tuned(model, tmp_path / "lora", "sentence-transformers/all-MiniLM-L6-v2")
        plain = PeftModel.from_pretrained(fresh, str(tmp_path / "lora")).eval()
        got = plain(**minilm_batch).last_hidden_state
    assert (got - expected).abs().max().item() <= 1e-5


def test_base_state_dict_is_the_untuned_bases(tiny, variant: dict, kind: str) -> None:
    """What an export saves as the base (peft_ir.export): every base tensor under its own name, nothing added; the
    trained ones (bitfit's biases, a head) at their trained values."""
    from peft_ir.tuning import base_state_dict

    base = tiny.model("bert", kind)
    expected = {k: v.clone() for k, v in base.state_dict().items()}
    model = apply_tuning(base, TuningConfig(**variant))
    tiny.perturb(model)
    saved = base_state_dict(model)
    assert saved.keys() == expected.keys()
    changed = {k for k in saved if not torch.equal(saved[k], expected[k])}
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed == {k for k in saved if k in trained}
