"""Prefix attention: mirrors transformers' attention exactly at l = 0, masks padding, agrees across eager/sdpa."""

from __future__ import annotations

import pytest
import torch

from peft_ir.errors import PeftIRError
from peft_ir.tuning import TuningConfig, apply_tuning
from peft_ir.tuning.arch import detect
from peft_ir.tuning.methods.prefix import extend_mask, inject_prefix


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_replaced_attention_equals_the_original_with_empty_prefix(tiny, family: str, attn: str) -> None:
    batch = tiny.batch()
    expected = tiny.outputs(tiny.model(family, attn=attn), batch)
    model = tiny.model(family, attn=attn)
    inject_prefix(detect(model), 0)
    assert all(type(s.self_attention).forward is not s.self_attention.forward for s in detect(model).layers)
    got = tiny.outputs(model, batch)
    assert (got - expected).abs().max().item() <= 1e-6


@pytest.mark.parametrize("family", ["bert", "distilbert"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_padding_stays_invisible_with_prefixes(tiny, family: str, attn: str) -> None:
    """A padded sequence gives the same states as the same tokens alone: the mask was extended correctly."""
    model = apply_tuning(tiny.model(family, attn=attn), TuningConfig(method="prefix", prefix_len=4))
    batch = tiny.batch()
    padded = tiny.outputs(model, batch)
    n = int(batch["attention_mask"][2].sum())
    alone = tiny.outputs(model, {"input_ids": batch["input_ids"][2:3, :n], "attention_mask": torch.ones(1, n).long()})
    assert (padded[2, :n] - alone[0]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_eager_and_sdpa_agree_with_prefixes(tiny, family: str) -> None:
    batch = tiny.batch()
    outs = []
    for attn in ("eager", "sdpa"):
        model = apply_tuning(tiny.model(family, attn=attn), TuningConfig(method="prefix", prefix_len=5, seed=3))
        outs.append(tiny.outputs(model, batch))
    assert (outs[0] - outs[1]).abs().max().item() <= 1e-5
    base = tiny.outputs(tiny.model(family), batch)
    assert (outs[0] - base).abs().max().item() > 1e-3  # the prefixes do act


def test_extend_mask_opens_the_prefix_positions() -> None:
    boolean = torch.tensor([[[[True, False]]]])
    assert extend_mask(boolean, 2).tolist() == [[[[True, True, True, False]]]]
    additive = torch.tensor([[[[0.0, -1e9]]]])
    assert extend_mask(additive, 1).tolist() == [[[[0.0, 0.0, -1e9]]]]
    assert extend_mask(None, 3) is None
    with pytest.raises(PeftIRError):
        extend_mask(torch.ones(2, 3), 1)


def test_unsupported_attention_implementation_is_refused(tiny) -> None:
    model = tiny.model("bert")
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(PeftIRError, match="eager"):
        apply_tuning(model, TuningConfig(method="prefix"))
