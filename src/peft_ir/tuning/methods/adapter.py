"""Houlsby adapters: two bottlenecks per layer, in series after the attention and FFN output projections.

o -> o + W_up · act(W_down · o), where o is the sub-layer's output after its projection and the dropout that
follows it, before Add & Norm: y = LayerNorm(x + A(dropout(W h))) as in Houlsby et al. 2019. W_up is zero so the
model starts equal to the frozen base. The activation is the config's (ReLU by default; Houlsby et al. use GeLU).
In a pre-norm layer (h = x + Attn(LN_1(x)), DESIGN §7) the same o sits before the residual add: h = x + A(o).
"""

from __future__ import annotations

from peft_ir.tuning.arch import Arch
from peft_ir.tuning.config import Method, Part, TuningConfig, register
from peft_ir.tuning.modules import SeriesAdapter, bottleneck_params, place

# (slot of LayerSlots the adapter acts on, the projection before it, name of the child module on the layer, label)
SLOTS = (
    ("attn_out", "attn_proj", "tuning_adapter_attn", "attention"),
    ("ffn_out", "ffn_proj", "tuning_adapter_ffn", "FFN"),
)


def _where(arch: Arch, out: str, proj: str) -> str:
    if getattr(arch.layers[0], out) is getattr(arch.layers[0], proj):  # no dropout after the projection
        return f"after {arch.pattern(proj)}"
    return f"after {arch.pattern(proj)} and its dropout ({arch.pattern(out)})"


def _join(arch: Arch) -> str:
    return "the residual add" if arch.pre_norm else "Add & Norm"


def adapter_parts(arch: Arch, r: int) -> list[Part]:
    each = bottleneck_params(arch.hidden, r)
    return [
        Part(
            f"series adapter ({label}), r={r}",
            f"{_where(arch, out, proj)}, before {_join(arch)} (as {arch.pattern('layer')}.{child})",
            each,
            arch.num_layers,
        )
        for out, proj, child, label in SLOTS
    ]


def inject_adapters(arch: Arch, r: int, activation: str) -> None:
    for slots in arch.layers:
        for out, proj, child, _ in SLOTS:
            adapter = place(SeriesAdapter(arch.hidden, r, activation), like=getattr(slots, proj).weight)
            slots.layer.add_module(child, adapter)
            adapter.attach(getattr(slots, out))


@register
class Adapter(Method):
    name = "adapter"
    order = 20
    summary = "Houlsby bottleneck adapters, 2 per layer, in series before each Add & Norm"
    size_fields = ("r",)
    budget_fields = ("r",)
    defaults = {"r": 16}
    merge_blocker = "the adapters' non-linearity between W_down and W_up cannot be folded into a linear weight"

    def parts(self, arch: Arch, config: TuningConfig) -> list[Part]:
        return adapter_parts(arch, config.r)

    def inject(self, arch: Arch, config: TuningConfig) -> None:
        inject_adapters(arch, config.r, config.activation)
