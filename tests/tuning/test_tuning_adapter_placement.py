"""The series adapters sit where Houlsby et al. put them: on the sub-layer's output after its projection *and its
dropout*, before Add & Norm: y = LN(x + A(dropout(W h))), A(o) = o + BN(o).

The hooked model is compared with a forward written out by hand from the same weights, in training mode, with each
post-projection dropout replaced by one fixed mask (so both sides drop the same units). With the adapter before
the dropout instead, the adapter's output would be dropped too and the two would differ.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from peft_ir.tuning import TuningConfig, apply_tuning


def fixed_dropout(t: torch.Tensor) -> torch.Tensor:
    """A dropout with p = 0.5 whose mask depends only on the tensor's shape."""
    g = torch.Generator().manual_seed(t.numel())
    return t * 2.0 * torch.bernoulli(torch.full(t.shape, 0.5), generator=g)


def linear(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, module.weight, module.bias)  # bypasses any hook on the module


def layer_norm(module: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)


def adapter(module: nn.Module, o: torch.Tensor) -> torch.Tensor:
    return o + module(o)  # A(o) = o + BN(o)


def hand_written_layer(family: str, layer: nn.Module, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Houlsby's layer from the attention context (input of the attention output projection) and the layer input."""
    if family == "distilbert":  # no dropout after out_lin; the FFN ends in lin2 then dropout
        u = layer_norm(layer.sa_layer_norm, x + adapter(layer.tuning_adapter_attn, linear(layer.attention.out_lin,
                                                                                           context)))
        f = fixed_dropout(linear(layer.ffn.lin2, layer.ffn.activation(linear(layer.ffn.lin1, u))))
        return layer_norm(layer.output_layer_norm, u + adapter(layer.tuning_adapter_ffn, f))
    out = layer.attention.output
    u = layer_norm(out.LayerNorm, x + adapter(layer.tuning_adapter_attn, fixed_dropout(linear(out.dense, context))))
    i = layer.intermediate.intermediate_act_fn(linear(layer.intermediate.dense, u))
    f = fixed_dropout(linear(layer.output.dense, i))
    return layer_norm(layer.output.LayerNorm, u + adapter(layer.tuning_adapter_ffn, f))


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_adapter_sits_after_the_sublayer_dropout(tiny, family: str) -> None:
    from peft_ir.tuning.arch import detect

    model = apply_tuning(tiny.model(family), TuningConfig(method="adapter", r=4))
    tiny.perturb(model, std=0.5)  # non-zero adapters
    model.train()
    for module in model.modules():  # deterministic: no other dropout
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    post = [layer.ffn.dropout for layer in model.transformer.layer] if family == "distilbert" else [
        m for layer in model.encoder.layer for m in (layer.attention.output.dropout, layer.output.dropout)]
    for module in post:
        module.forward = fixed_dropout  # the module's hooks still run around it

    arch = detect(model)
    seen: dict[int, dict[str, torch.Tensor]] = {}
    handles = []
    for slots in arch.layers:
        record = seen.setdefault(slots.index, {})
        handles += [
            slots.layer.register_forward_pre_hook(
                lambda m, args, kwargs, r=record: r.__setitem__("x", args[0] if args else kwargs["hidden_states"]),
                with_kwargs=True),
            slots.attn_proj.register_forward_pre_hook(lambda m, args, r=record: r.__setitem__("context", args[0])),
            slots.layer.register_forward_hook(
                lambda m, args, out, r=record: r.__setitem__("y", out[0] if isinstance(out, tuple) else out)),
        ]
    with torch.no_grad():
        tiny.outputs(model, tiny.batch())
    for h in handles:
        h.remove()
    for slots in arch.layers:
        record = seen[slots.index]
        with torch.no_grad():
            expected = hand_written_layer(family, slots.layer, record["x"], record["context"])
        gap = (record["y"] - expected).abs().max().item()
        assert gap < 1e-5, f"{family} layer {slots.index}: hooked forward differs from Houlsby's by {gap:.3g}"
