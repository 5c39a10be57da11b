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


def _record_layers(arch) -> tuple[dict[int, dict[str, torch.Tensor]], list]:  # type: ignore[no-untyped-def]
    """Hooks that keep each layer's input x, attention context and output y (per layer index); and their handles."""
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
    return seen, handles


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
    seen, handles = _record_layers(arch)
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


# -- pre-norm layers (DESIGN §7): h = x + Attn(LN_1(x)); y = h + FFN(LN_2(h)) --------------------------------------
def rms_norm(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + module.variance_epsilon))


def pre_norm_parts(family: str, layer: nn.Module):
    """(attention output projection, LN_2, FFN) of a Llama or ModernBERT layer, written out without hooks."""
    if family == "llama":
        mlp = layer.mlp
        ffn = lambda z: linear(mlp.down_proj, F.silu(linear(mlp.gate_proj, z)) * linear(mlp.up_proj, z))  # noqa: E731
        return layer.self_attn.o_proj, lambda h: rms_norm(layer.post_attention_layernorm, h), ffn
    mlp = layer.mlp

    def ffn(z: torch.Tensor) -> torch.Tensor:
        inner, gate = linear(mlp.Wi, z).chunk(2, dim=-1)
        return linear(mlp.Wo, mlp.act(inner) * gate)
    return layer.attn.Wo, lambda h: layer_norm(layer.mlp_norm, h), ffn


def hand_written_pre_norm_layer(family: str, method: str, layer: nn.Module, x: torch.Tensor,
                                context: torch.Tensor) -> torch.Tensor:
    """The layer from its input x and the attention context (input of the output projection), per DESIGN §7."""
    proj, norm_2, ffn = pre_norm_parts(family, layer)
    o = linear(proj, context)
    if method == "parallel":  # FFN(LN_2(h)) + s * BN(LN_2(h))
        h = x + o
        return h + ffn(norm_2(h)) + layer.tuning_parallel(norm_2(h))
    h = x + adapter(layer.tuning_adapter_attn, o)
    if method == "iaa-s":
        h = h + layer.tuning_aside_attn(x)
    y = h + adapter(layer.tuning_adapter_ffn, ffn(norm_2(h)))
    if method == "iaa-s":
        y = y + layer.tuning_aside_ffn(h)
    if method == "iaa-l":
        y = y + layer.tuning_aside(x)
    return y


@pytest.mark.parametrize("method", ["adapter", "parallel", "iaa-s", "iaa-l", "iaa-m"])
@pytest.mark.parametrize("family", ["llama", "modernbert"])
def test_pre_norm_placements_equal_the_hand_written_layer(tiny, family: str, method: str) -> None:
    """Adapters on the sub-layer outputs before the residual add, the parallel adapter from LN_2(h) to the FFN output,
    IAA-S/IAA-L asides into the residual stream, IAA-M before the final norm; random non-zero added weights."""
    from peft_ir.tuning.arch import detect

    model = apply_tuning(tiny.model(family), TuningConfig(method=method, r=4, **({} if method in ("adapter", "parallel")
                                                                               else {"ar": 3})))
    tiny.perturb(model, std=0.5)
    arch = detect(model)
    seen, handles = _record_layers(arch)
    with torch.no_grad():
        final = tiny.outputs(model, tiny.batch())
    for h in handles:
        h.remove()
    with torch.no_grad():
        if method == "iaa-m":  # h = Layers(x_1) + BN(x_1), then the final norm
            last = seen[arch.num_layers - 1]
            y = hand_written_pre_norm_layer(family, "adapter", arch.layers[-1].layer, last["x"], last["context"])
            y = y + arch.layer_owner.tuning_aside(seen[0]["x"])
            norm = model.norm if family == "llama" else model.final_norm
            expected = rms_norm(norm, y) if family == "llama" else layer_norm(norm, y)
            gap = (final - expected).abs().max().item()
        else:
            gap = max((seen[s.index]["y"] - hand_written_pre_norm_layer(
                family, method, s.layer, seen[s.index]["x"], seen[s.index]["context"])).abs().max().item()
                for s in arch.layers)
    assert gap < 1e-5, f"{family} {method}: hooked forward differs from DESIGN §7 by {gap:.3g}"
