"""Houlsby adapters: two bottlenecks per layer, in series after the attention and FFN output projections.

h -> h + W_up · act(W_down · h), placed after the projection and before its Add & Norm; W_up is zero so the
model starts equal to the frozen base.
"""

from __future__ import annotations

from peft_ir.tuning.arch import Arch
from peft_ir.tuning.config import TuningConfig
from peft_ir.tuning.modules import SeriesAdapter, bottleneck_params, place
from peft_ir.tuning.registry import Method, Part, register

# (slot of LayerSlots, name of the child module on the layer, label)
SLOTS = (("attn_proj", "tuning_adapter_attn", "attention"), ("ffn_proj", "tuning_adapter_ffn", "FFN"))


def adapter_parts(arch: Arch, r: int) -> list[Part]:
    each = bottleneck_params(arch.hidden, r)
    return [
        Part(
            f"series adapter ({label}), r={r}",
            f"after {arch.pattern(slot)}, before Add & Norm (as {arch.pattern('layer')}.{child})",
            each,
            arch.num_layers,
        )
        for slot, child, label in SLOTS
    ]


def inject_adapters(arch: Arch, r: int, activation: str) -> None:
    for slots in arch.layers:
        for slot, child, _ in SLOTS:
            target = getattr(slots, slot)
            adapter = place(SeriesAdapter(arch.hidden, r, activation), like=target.weight)
            slots.layer.add_module(child, adapter)
            adapter.attach(target)


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
