"""Prefix attention: mirrors transformers' attention exactly at l = 0, masks padding, agrees across eager/sdpa; the
hooks into a module that computes attention itself (MPNet) give the same attention, by hand."""

from __future__ import annotations

import pytest
import torch

from peft_ir.errors import PeftIRError
from peft_ir.tuning import TuningConfig, apply_tuning
from peft_ir.tuning.arch import ARCHITECTURES, detect
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


# -- every family: through transformers' attention interface, MPNet through hooks (its tiny config is eager only) ----
OTHER_FAMILIES = ("roberta", "xlm-roberta", "electra", "modernbert", "llama", "qwen2", "qwen3", "mistral", "mpnet")
DECODERS = ("llama", "qwen2", "qwen3", "mistral")


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", OTHER_FAMILIES)
def test_empty_prefix_equals_the_original_on_every_family(tiny, family: str, attn: str) -> None:
    batch = tiny.batch()
    expected = tiny.outputs(tiny.model(family, attn=attn), batch)
    model = tiny.model(family, attn=attn)
    inject_prefix(detect(model), 0)
    assert (tiny.outputs(model, batch) - expected).abs().max().item() <= 1e-6


@pytest.mark.parametrize("family", OTHER_FAMILIES)
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


def test_a_module_computing_attention_itself_without_kv_proj_is_refused(tiny, monkeypatch) -> None:
    """Without the table's key/value projections a module that bypasses the interface has no way in."""
    import dataclasses

    monkeypatch.setitem(ARCHITECTURES, "mpnet", dataclasses.replace(ARCHITECTURES["mpnet"], kv_proj=None))
    for method in ("prefix", "mam"):
        with pytest.raises(PeftIRError, match="MPNetSelfAttention of model_type 'mpnet' computes its attention itself"):
            apply_tuning(tiny.model("mpnet"), TuningConfig(method=method))


def _by_hand(attention: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """MPNet's self-attention with prefixes, written out: softmax over [prefix keys; keys] of q·k/sqrt(d) plus the
    position bias and mask, both zero in the prefix columns; the values alike; then the output projection. (The
    projections are applied as plain functions: k and v carry the prefix hooks.)"""
    prefix = attention.tuning_prefix
    heads, length, d = prefix.key.shape
    batch, seq, _ = x.shape

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, seq, heads, d).transpose(1, 2)

    q, k, v = (split(torch.nn.functional.linear(x, p.weight, p.bias)) for p in (attention.q, attention.k, attention.v))
    keys = torch.cat([prefix.key.expand(batch, -1, -1, -1), k], dim=2)
    values = torch.cat([prefix.value.expand(batch, -1, -1, -1), v], dim=2)
    open_ = torch.zeros(batch, 1, seq, length)
    scores = q @ keys.transpose(-1, -2) / d ** 0.5 + torch.cat([open_.expand(-1, heads, -1, -1), bias], -1) \
        + torch.cat([open_, mask.expand(-1, -1, seq, -1)], -1)
    return attention.o((scores.softmax(-1) @ values).transpose(1, 2).reshape(batch, seq, heads * d))


def test_mpnet_prefixes_through_hooks_equal_the_attention_by_hand(tiny) -> None:
    """One layer inside the model on a padded batch (the model passes a (B, 1, S, S) mask and a position bias), and
    the module called directly with a broadcast (B, 1, 1, S) mask: the hooked module equals the hand computation."""
    model = apply_tuning(tiny.model("mpnet"), TuningConfig(method="prefix", prefix_len=3))
    tiny.perturb(model, std=0.5)  # prefixes far from zero
    attention = model.encoder.layer[1].attention.attn
    seen: dict = {}
    attention.register_forward_pre_hook(lambda m, args, kwargs: seen.update(args=args), with_kwargs=True, prepend=True)
    attention.register_forward_hook(lambda m, args, out: seen.update(out=out))
    batch = tiny.batch()
    with torch.no_grad():
        model(**batch)
        x, mask, bias = seen["args"]
        assert mask.shape == (3, 1, 8, 8) and bias.shape == (3, 4, 8, 8) and (mask < 0).any()  # padding is masked
        assert (seen["out"][0] - _by_hand(attention, x, mask, bias)).abs().max().item() <= 1e-5

        broadcast = mask[:, :, :1]
        out, probs = attention(x, broadcast, bias, output_attentions=True)
        assert (out - _by_hand(attention, x, broadcast, bias)).abs().max().item() <= 1e-5
    assert probs.shape == (3, 4, 8, 3 + 8) and probs[..., :3].min().item() > 0  # every query sees the prefixes


def test_mpnet_prefixes_under_activation_checkpointing(tiny) -> None:
    """Recomputing each layer in the backward pass (non-reentrant, as transformers' checkpointing layers do) runs the
    prefix hooks again and gives the same loss and gradients; the prefixes get gradients. Transformers 5.24 offers no
    `gradient_checkpointing_enable` for MPNet, so the layers are wrapped here as it would wrap them."""
    import functools

    from torch.utils.checkpoint import checkpoint

    model = apply_tuning(tiny.model("mpnet"), TuningConfig(method="prefix", prefix_len=3))
    tiny.perturb(model)
    batch = tiny.batch()

    def grads() -> tuple[float, dict[str, torch.Tensor]]:
        model.zero_grad()
        loss = tiny.loss(model, batch)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain_loss, plain = grads()
    runs = []
    for layer in model.encoder.layer:
        def counted(*args: object, _forward=layer.forward, **kwargs: object) -> object:
            runs.append(1)
            return _forward(*args, **kwargs)

        layer.forward = functools.partial(checkpoint, counted, use_reentrant=False)
    loss, checkpointed = grads()
    assert len(runs) == 2 * len(model.encoder.layer)  # each layer ran again in the backward pass
    assert loss == pytest.approx(plain_loss, rel=1e-6)
    prefixes = {n for n, p in model.named_parameters() if ".tuning_prefix." in n}
    assert set(checkpointed) == set(plain) == prefixes
    for name, grad in plain.items():
        assert torch.count_nonzero(grad) > 0 and torch.allclose(checkpointed[name], grad, atol=1e-6), name


@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers renames past_key_values to cache
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_a_sliding_window_does_not_hide_the_prefixes(tiny, attn: str) -> None:
    """Mistral's window (4) is shorter than the batch (8). l = 0 equals the original; with l = 3 the states equal the
    base model's with the prefixes in its key/value cache (positions from 0) under a hand-built mask: the model's own
    sliding-window mask (checked against it) with l visible columns in front, so every query sees every prefix. A
    cache seen through the window would hide them from far queries: that differs."""
    from transformers import DynamicCache

    base = tiny.model("mistral", attn=attn)
    window, batch = base.config.sliding_window, tiny.batch()
    ids, padding = batch["input_ids"], batch["attention_mask"].bool()
    (n, seq), length = ids.shape, 3
    assert window < seq
    empty = tiny.model("mistral", attn=attn)
    inject_prefix(detect(empty), 0)
    assert (tiny.outputs(empty, batch) - tiny.outputs(base, batch)).abs().max().item() <= 1e-6

    def additive(allowed: torch.Tensor) -> torch.Tensor:
        return torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]

    def with_cache(model: torch.nn.Module, mask: torch.Tensor) -> torch.Tensor:
        cache = DynamicCache()
        for i, layer in enumerate(model.layers):
            cache.update(layer.self_attn.tuning_prefix.key.expand(n, -1, -1, -1),
                         layer.self_attn.tuning_prefix.value.expand(n, -1, -1, -1), i)
        return base(input_ids=ids, attention_mask=additive(mask), past_key_values=cache,
                    position_ids=torch.arange(seq).expand(n, -1)).last_hidden_state

    q, k = torch.arange(seq)[:, None], torch.arange(seq)[None, :]
    own = (k <= q) & (k > q - window) & padding[:, None, :]  # (batch, queries, keys)
    with torch.no_grad():  # the hand-built mask is the model's own:
        assert (base(input_ids=ids, attention_mask=additive(own)).last_hidden_state
                - tiny.outputs(base, batch))[padding].abs().max().item() <= 1e-5
        model = apply_tuning(tiny.model("mistral", attn=attn), TuningConfig(method="prefix", prefix_len=length, seed=2))
        tiny.perturb(model, std=0.5)
        got = tiny.outputs(model, batch)
        visible = torch.cat([torch.ones(n, seq, length, dtype=torch.bool), own], dim=-1)
        assert (got - with_cache(model, visible))[padding].abs().max().item() <= 1e-5
        cached = (torch.arange(-length, 0)[None, :] > q - window).expand(n, -1, -1)  # at positions -l..-1
        windowed = torch.cat([cached, own], dim=-1)  # the prefixes seen through the window
        assert (got - with_cache(model, windowed))[padding].abs().max().item() > 1e-3


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
