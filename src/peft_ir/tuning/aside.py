"""Aside modules (Ma et al. 2022): BN(z) = W_up · act(W_down · z) + b, W_up zero, on a path beside the frozen blocks.

Placements (DESIGN §2, Fig. 3 of the paper; §7 for pre-norm layers):
- layer (IAA-L):    x_{l+1} = Layer_l(x_l) + BN_l(x_l), added after the layer's last Add & Norm (pre-norm: to the
                    layer's output, the residual stream after its last residual add).
- sublayer (IAA-S): u = AddNorm(x, Adapter(Attn(x))) + BN_a(x);  y = AddNorm(u, Adapter(FFN(u))) + BN_f(u).
                    pre-norm: h = x + Adapter(Attn(LN_1(x))) + BN_a(x);  y = h + Adapter(FFN(LN_2(h))) + BN_f(h),
                    i.e. BN_a/BN_f add to the attention/FFN block's output, which the layer adds to the stream.
- model (IAA-M):    h = Layers(x_1) + BN(x_1), from the first layer's input to the last layer's output (pre-norm:
                    before the model's final norm).
They attach to any base method that allows them (adapter = IAA, lora, prefix, ...): `TuningConfig(aside=...)`.
"""

from __future__ import annotations

from peft_ir.tuning.arch import Arch
from peft_ir.tuning.config import Part
from peft_ir.tuning.modules import SideBottleneck, bottleneck_params, place


def aside_parts(arch: Arch, placement: str, ar: int) -> list[Part]:
    each = bottleneck_params(arch.hidden, ar)
    layers = arch.pattern("layer")
    if placement == "layer":
        last = "its last residual add (pre-norm)" if arch.pre_norm else "its last Add & Norm"
        where = f"input of {layers} -> added after {last} (as {layers}.tuning_aside)"
        return [Part(f"aside module per layer, ar={ar}", where, each, arch.num_layers)]
    if placement == "sublayer":
        into = " (into the residual stream)" if arch.pre_norm else ""
        return [
            Part(
                f"aside module per attention sub-layer, ar={ar}",
                f"input of {arch.pattern('attn_in')} -> added after {arch.pattern('attn_join')}{into} "
                f"(as {layers}.tuning_aside_attn)",
                each,
                arch.num_layers,
            ),
            Part(
                f"aside module per FFN sub-layer, ar={ar}",
                f"input of {arch.pattern('ffn_in')} -> added after {arch.pattern('ffn_join')}{into} "
                f"(as {layers}.tuning_aside_ffn)",
                each,
                arch.num_layers,
            ),
        ]
    if placement == "model":
        first, last = arch.name_of(arch.layers[0].layer), arch.name_of(arch.layers[-1].layer)
        owner = arch.name_of(arch.layer_owner)
        name = f"{owner}.tuning_aside" if owner else "tuning_aside"
        before = ", before the model's final norm" if arch.pre_norm else ""
        where = f"input of {first} -> added to the output of {last}{before} (as {name})"
        return [Part(f"aside module across the model, ar={ar}", where, each, 1)]
    raise ValueError(placement)


def inject_aside(arch: Arch, placement: str, ar: int, activation: str) -> None:
    def new(like_layer) -> SideBottleneck:
        return place(SideBottleneck(arch.hidden, ar, activation), like=next(like_layer.parameters()))

    if placement == "layer":
        for slots in arch.layers:
            module = new(slots.layer)
            slots.layer.add_module("tuning_aside", module)
            module.attach(source=slots.layer, target=slots.layer)
    elif placement == "sublayer":
        for slots in arch.layers:
            attn = new(slots.layer)
            slots.layer.add_module("tuning_aside_attn", attn)
            # source and target both inside the layer's forward, which gradient checkpointing recomputes
            attn.attach(source=slots.attn_in, target=slots.attn_join)
            ffn = new(slots.layer)
            slots.layer.add_module("tuning_aside_ffn", ffn)
            ffn.attach(source=slots.ffn_in, target=slots.ffn_join)
    elif placement == "model":
        module = new(arch.layers[0].layer)
        arch.layer_owner.add_module("tuning_aside", module)
        module.attach(source=arch.layers[0].layer, target=arch.layers[-1].layer)
    else:
        raise ValueError(placement)
