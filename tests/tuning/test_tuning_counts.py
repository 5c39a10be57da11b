"""Trainable counts: the paper's reference budgets on BERT-base, closed forms vs. measured, the budget helper."""

from __future__ import annotations

import pytest

from peft_ir.errors import PeftIRError
from peft_ir.tuning import TuningConfig, apply_tuning, budget_config, trainable_parameters
from peft_ir.tuning.apply import config_parts

D, L, BERT_BASE_TOTAL = 768, 12, 109_482_240


def bottleneck(r: int) -> int:
    return 2 * D * r + r + D  # W_down, b_down, W_up, b_up


REFERENCE = [
    # (config, closed form, share in % to 2 decimals)
    ({"method": "adapter", "r": 16}, 2 * L * bottleneck(16), 0.56),
    ({"method": "lora", "lora_r": 16}, 2 * L * 16 * (D + D), 0.54),
    ({"method": "prefix", "prefix_len": 32}, L * 2 * 32 * D, 0.54),
    ({"method": "iaa-l", "r": 12, "ar": 12}, L * (2 * bottleneck(12) + bottleneck(12)), 0.63),
    ({"method": "iaa-l", "r": 50, "ar": 300}, L * (2 * bottleneck(50) + bottleneck(300)), 6.76),
]


@pytest.mark.parametrize("sizes, closed_form, share", REFERENCE, ids=lambda x: str(x))
def test_reference_budgets_on_bert_base(bert_base, sizes: dict, closed_form: int, share: float) -> None:
    model = apply_tuning(bert_base, TuningConfig(**sizes))
    trainable, total = trainable_parameters(model)
    assert total == BERT_BASE_TOTAL
    assert trainable == closed_form
    assert round(100 * trainable / total, 2) == share


def test_reference_integers(bert_base) -> None:
    """The closed forms above, spelled out (guards the formulas themselves)."""
    assert [c for _, c, _ in REFERENCE] == [608_640, 589_824, 589_824, 691_632, 7_405_248]


def test_closed_form_equals_measured_on_every_model(tiny, variant: dict, family: str, kind: str) -> None:
    model = tiny.model(family, kind)
    base_total = sum(p.numel() for p in model.parameters())
    config = TuningConfig(**variant)
    from peft_ir.tuning.arch import detect

    predicted = sum(p.total for p in config_parts(detect(model), config))
    apply_tuning(model, config)
    trainable, total = trainable_parameters(model)
    assert total == base_total
    assert trainable == predicted
    assert 0 < trainable <= total or variant["method"] == "full"


@pytest.mark.parametrize("method", ["adapter", "parallel", "prefix", "lora", "mam", "iaa-s", "iaa-l", "iaa-m"])
def test_budget_helper_hits_half_a_percent(bert_base, method: str) -> None:
    config = budget_config(bert_base, method, "0.5%")
    trainable, total = trainable_parameters(apply_tuning(bert_base, config))
    assert abs(trainable / total - 0.005) < 0.0005, (config, trainable / total)


def test_budget_helper_with_a_fixed_size_reaches_the_large_budget(bert_base) -> None:
    config = budget_config(bert_base, "iaa-l", 0.067, r=50)
    assert config.r == 50 and config.ar == 296
    trainable, total = trainable_parameters(apply_tuning(bert_base, config))
    assert abs(trainable / total - 0.067) < 0.0005


def test_budget_helper_rejects_what_it_cannot_do(bert_base) -> None:
    with pytest.raises(PeftIRError, match="no size to choose"):
        budget_config(bert_base, "bitfit", "0.5%")
    with pytest.raises(PeftIRError, match="cannot reach"):
        budget_config(bert_base, "iaa-l", "0.0001%")


def test_budget_targets_the_method_and_leaves_the_cross_encoder_head_out() -> None:
    """On a MiniLM-shaped cross-encoder whose never-trained pooler trains with the head, the head (pooler +
    classifier) alone is 0.65 %; 0.5 % must still be reachable and be the method's own share, with the head on top
    in the reported share."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    with torch.device("meta"):
        model = BertForSequenceClassification(BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                                         intermediate_size=1536, num_labels=1))
    head = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("bert.pooler", "classifier")))
    config = budget_config(model, "iaa-l", "0.5%", train_pooler=True)
    trainable, total = trainable_parameters(apply_tuning(model, config))
    assert head / total > 0.005
    assert abs((trainable - head) / total - 0.005) < 0.0005, (config, trainable, head, total)


def test_budget_helper_gives_iaa_the_papers_sizes_and_ratio(bert_base) -> None:
    """IAA's free r and ar keep the paper's ratio: 1:1 at 0.5 % (r=ar=12 there), 6:1 at 6.7 % (r=50, ar=300),
    interpolated in log budget between the two and held beyond them."""
    assert budget_config(bert_base, "iaa-l", "6.7%").sizes() == {"r": 50, "ar": 300, "aside": "layer",
                                                                  "activation": "relu"}
    small = budget_config(bert_base, "iaa-l", "0.5%")
    assert small.r == small.ar == 9
    assert budget_config(bert_base, "iaa-l", "0.1%").ar == budget_config(bert_base, "iaa-l", "0.1%").r
    middle = budget_config(bert_base, "iaa-l", "2%")
    assert 2.0 < middle.ar / middle.r < 3.0  # 6 ** (log(2/0.5) / log(6.7/0.5)) = 2.6
    large = budget_config(bert_base, "iaa-l", "20%")
    assert large.ar == pytest.approx(6 * large.r, abs=1)
    for method in ("iaa-s", "iaa-m"):
        config = budget_config(bert_base, method, "6.7%")
        assert config.ar == pytest.approx(6 * config.r, abs=1), (method, config)
    lora = budget_config(bert_base, "lora", "6.7%", aside="layer")  # not IAA: one common size as before
    assert lora.lora_r == lora.ar
