"""The architecture table: every covered model_type has a tiny test row and its slots resolve; unknown types are
refused."""

from __future__ import annotations

import pytest
from torch import nn

from peft_ir.errors import PeftIRError
from peft_ir.tuning.arch import ARCHITECTURES, PRE_NORM, SLOT_NAMES, detect

REQUIRED = {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "mpnet", "modernbert", "llama", "qwen2",
            "qwen3", "mistral"}
PRE_NORM_TYPES = {"modernbert", "llama", "qwen2", "qwen3", "mistral"}


def test_the_table_covers_the_required_types_and_each_has_a_tiny_row(tiny) -> None:
    assert REQUIRED <= set(ARCHITECTURES)
    assert set(tiny.all_families) == set(ARCHITECTURES)  # adding a family = one entry + one test row
    assert {t for t, spec in ARCHITECTURES.items() if spec.norm == PRE_NORM} == PRE_NORM_TYPES


def test_every_slot_resolves_on_a_tiny_model(tiny, any_family: str) -> None:
    family = any_family
    model = tiny.model(family, "cross")
    arch = detect(model)
    assert arch.family == family and arch.num_layers == 2 and arch.hidden == 32
    assert arch.head and arch.encoder is model.base_model
    inside = {id(m) for m in arch.encoder.modules()}
    for slots in arch.layers:
        for name in SLOT_NAMES:
            assert id(getattr(slots, name)) in inside, (family, name)
        assert isinstance(slots.attn_proj, nn.Linear) and isinstance(slots.ffn_proj, nn.Linear)
        assert slots.attn_proj.out_features == slots.ffn_proj.out_features == 32
        assert slots.ffn_proj.in_features == 37
    key = getattr(arch.layers[0].self_attention, "k_proj", None)  # decoders: grouped-query attention
    if key is not None:
        assert key.out_features == arch.num_kv_heads * arch.head_dim < arch.num_heads * arch.head_dim
    else:
        assert arch.num_kv_heads == arch.num_heads and arch.num_heads * arch.head_dim == arch.hidden
    targets = {name.rpartition(".")[2] for name, _ in arch.layers[0].layer.named_modules()}
    assert set(arch.default_lora_targets) <= targets


def test_an_unknown_bert_like_type_falls_back_to_the_detectors(tiny) -> None:
    model = tiny.model("bert")
    expected = detect(model)
    model.config.model_type = "my-bert"  # not in the table
    arch = detect(model)
    assert arch.family == "bert"
    assert [s.attn_out for s in arch.layers] == [s.attn_out for s in expected.layers]


def test_an_unknown_architecture_is_refused_with_its_model_type_and_how_to_add_it() -> None:
    import torch
    from transformers import GPT2Config, GPT2Model

    with torch.device("meta"):
        model = GPT2Model(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=99))
    with pytest.raises(PeftIRError, match=r"model_type 'gpt2' \(GPT2Model\).*ARCHITECTURES in peft_ir/tuning/arch.py"):
        detect(model)


def test_a_table_entry_that_does_not_fit_the_checkpoint_names_the_slot(tiny) -> None:
    model = tiny.model("llama")
    del model.layers[0].post_attention_layernorm
    with pytest.raises(PeftIRError, match="model_type 'llama'.*'post_attention_layernorm'.*ffn_in slot"):
        detect(model)
