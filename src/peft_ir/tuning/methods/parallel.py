"""Parallel adapter (He et al. 2022): a scaled bottleneck beside each FFN, FFN(u) + s · BN(u).

u is what the FFN reads: the Add & Norm output in a post-norm layer, LN_2(h) in a pre-norm one (DESIGN §7).
"""

from __future__ import annotations

from peft_ir.tuning.arch import Arch
from peft_ir.tuning.config import Method, Part, TuningConfig, register
from peft_ir.tuning.modules import SideBottleneck, bottleneck_params, place

CHILD = "tuning_parallel"


def parallel_parts(arch: Arch, r: int, scaling: float) -> list[Part]:
    where = (
        f"input of {arch.pattern('ffn_inner')} -> added ({scaling:g} x) to the output of {arch.pattern('ffn_proj')}, "
        f"before {'the residual add' if arch.pre_norm else 'Add & Norm'} (as {arch.pattern('layer')}.{CHILD})"
    )
    return [Part(f"parallel adapter (FFN), r={r}", where, bottleneck_params(arch.hidden, r), arch.num_layers)]


def inject_parallel(arch: Arch, r: int, scaling: float, activation: str) -> None:
    for slots in arch.layers:
        module = place(SideBottleneck(arch.hidden, r, activation, scale=scaling), like=slots.ffn_proj.weight)
        slots.layer.add_module(CHILD, module)
        module.attach(source=slots.ffn_inner, target=slots.ffn_proj)


@register
class Parallel(Method):
    name = "parallel"
    order = 30
    summary = "bottleneck adapter in parallel to each FFN, output scaled by s"
    size_fields = ("r", "scaling")
    budget_fields = ("r",)
    defaults = {"r": 32, "scaling": 4.0}
    merge_blocker = "the adapter's non-linearity between W_down and W_up cannot be folded into a linear weight"

    def parts(self, arch: Arch, config: TuningConfig) -> list[Part]:
        return parallel_parts(arch, config.r, config.scaling)

    def inject(self, arch: Arch, config: TuningConfig) -> None:
        inject_parallel(arch, config.r, config.scaling, config.activation)
