"""Prefix attention: mirrors transformers' attention exactly at l = 0, masks padding, agrees across eager/sdpa."""

from __future__ import annotations

import pytest
import torch

from peft_ir.errors import PeftIRError
from peft_ir.tuning import TuningConfig, apply_tuning
from peft_ir.tuning.arch import detect
from peft_ir.tuning.methods.prefix import PREFIX_ATTENTION, extend_mask, inject_prefix


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_replaced_attention_equals_the_original_with_empty_prefix(tiny, family: str, attn: str) -> None:
    batch = tiny.batch()
    expected = tiny.outputs(tiny.model(family, attn=attn), batch)
    model = tiny.model(family, attn=attn)
    inject_prefix(detect(model), 0)
    assert all(s.self_attention.config._attn_implementation == PREFIX_ATTENTION for s in detect(model).layers)
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


# -- every family: prefixes through transformers' attention interface ------------------------------------------------
INTERFACE_FAMILIES = ("roberta", "xlm-roberta", "electra", "modernbert", "llama", "qwen2", "qwen3", "mistral")
DECODERS = ("llama", "qwen2", "qwen3", "mistral")


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", INTERFACE_FAMILIES)
def test_empty_prefix_equals_the_original_on_every_family(tiny, family: str, attn: str) -> None:
    batch = tiny.batch()
    expected = tiny.outputs(tiny.model(family, attn=attn), batch)
    model = tiny.model(family, attn=attn)
    inject_prefix(detect(model), 0)
    assert (tiny.outputs(model, batch) - expected).abs().max().item() <= 1e-6


@pytest.mark.parametrize("family", INTERFACE_FAMILIES)
def test_prefixes_act_keep_padding_invisible_and_agree_across_implementations(tiny, family: str) -> None:
    batch = tiny.batch()
    outs = []
    for attn in ("eager", "sdpa"):
        model = apply_tuning(tiny.model(family, attn=attn), TuningConfig(method="prefix", prefix_len=3, seed=3))
        padded = tiny.outputs(model, batch)
        n = int(batch["attention_mask"][2].sum())
        alone = tiny.outputs(model, {"input_ids": batch["input_ids"][2:3, :n],
                                     "attention_mask": torch.ones(1, n).long()})
        assert (padded[2, :n] - alone[0]).abs().max().item() <= 1e-5, attn
        outs.append(padded)
    assert (outs[0] - outs[1]).abs().max().item() <= 1e-5
    assert (outs[0] - tiny.outputs(tiny.model(family), batch)).abs().max().item() > 1e-3


@pytest.mark.parametrize("family", DECODERS)
def test_decoders_stay_causal_with_prefixes(tiny, family: str) -> None:
    """Changing the last token changes no earlier position, with or without padding (sdpa then has no mask)."""
    model = apply_tuning(tiny.model(family), TuningConfig(method="prefix", prefix_len=3))
    for mask in (tiny.batch()["attention_mask"], torch.ones(3, 8).long()):
        ids = tiny.batch()["input_ids"]
        other = ids.clone()
        other[:, -1] = 7
        a = tiny.outputs(model, {"input_ids": ids, "attention_mask": mask})
        b = tiny.outputs(model, {"input_ids": other, "attention_mask": mask})
        assert torch.equal(a[:, :-1], b[:, :-1])
        assert not torch.equal(a[mask.bool()[:, -1], -1], b[mask.bool()[:, -1], -1])


@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers renames past_key_values to cache
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_decoder_prefixes_equal_transformers_own_cache(tiny, family: str, attn: str) -> None:
    """The prefixes in the model's own key/value cache (as peft does it for decoders), the mask extended by l ones and
    positions from 0, give the same states: grouped-query heads and the causal mask are handled alike. (A sliding
    window, as Mistral's, would hide cached prefixes from far queries; peft-ir's prefixes stay visible to all.)"""
    from transformers import DynamicCache

    base = tiny.model(family, attn=attn)
    model = apply_tuning(tiny.model(family, attn=attn), TuningConfig(method="prefix", prefix_len=3, seed=2))
    tiny.perturb(model, std=0.5)
    for mask in (tiny.batch()["attention_mask"], torch.ones(3, 8).long()):
        batch = {"input_ids": tiny.batch()["input_ids"], "attention_mask": mask}
        cache = DynamicCache(config=base.config)
        for i, layer in enumerate(model.layers):
            prefix = layer.self_attn.tuning_prefix
            assert prefix.key.shape[0] == base.config.num_key_value_heads < base.config.num_attention_heads
            cache.update(prefix.key.detach().expand(3, -1, -1, -1), prefix.value.detach().expand(3, -1, -1, -1), i)
        with torch.no_grad():
            got = model(**batch).last_hidden_state
            ref = base(input_ids=batch["input_ids"], attention_mask=torch.cat([torch.ones(3, 3).long(), mask], 1),
                       past_key_values=cache, position_ids=torch.arange(8).expand(3, -1)).last_hidden_state
        assert (got - ref)[mask.bool()].abs().max().item() <= 1e-5


def test_a_model_whose_attention_bypasses_the_interface_is_refused(tiny) -> None:
    for method in ("prefix", "mam"):
        with pytest.raises(PeftIRError, match="MPNetSelfAttention of model_type 'mpnet' computes its attention itself"):
            apply_tuning(tiny.model("mpnet"), TuningConfig(method=method))


def test_a_prefixed_model_copies_and_follows_a_later_change_of_implementation(tiny) -> None:
    import copy

    model = apply_tuning(tiny.model("llama"), TuningConfig(method="prefix", prefix_len=2))
    batch = tiny.batch()
    clone = copy.deepcopy(model)
    assert clone.layers[0].self_attn.config.base_config is clone.config  # the view follows the copy's config
    assert torch.equal(tiny.outputs(clone, batch), tiny.outputs(model, batch))
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(PeftIRError, match="got 'flash_attention_2'"):
        tiny.outputs(model, batch)
