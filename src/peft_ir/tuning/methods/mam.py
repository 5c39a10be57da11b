"""MAM adapter (He et al. 2022): prefix tuning on attention plus a parallel adapter on the FFN."""

from __future__ import annotations

from peft_ir.tuning.arch import Arch
from peft_ir.tuning.config import Method, Part, TuningConfig, register
from peft_ir.tuning.methods.parallel import inject_parallel, parallel_parts
from peft_ir.tuning.methods.prefix import inject_prefix, prefix_parts


@register
class Mam(Method):
    name = "mam"
    order = 60
    summary = "prefix tuning on attention + scaled parallel adapter on the FFN ('MAM adapter')"
    size_fields = ("prefix_len", "r", "scaling")
    budget_fields = ("prefix_len", "r")
    defaults = {"prefix_len": 16, "r": 16, "scaling": 4.0}
    merge_blocker = "prefixes and the adapter's non-linearity cannot be folded into the base weights"

    def parts(self, arch: Arch, config: TuningConfig) -> list[Part]:
        return prefix_parts(arch, config.prefix_len) + parallel_parts(arch, config.r, config.scaling)

    def inject(self, arch: Arch, config: TuningConfig) -> None:
        inject_prefix(arch, config.prefix_len)
        inject_parallel(arch, config.r, config.scaling, config.activation)
