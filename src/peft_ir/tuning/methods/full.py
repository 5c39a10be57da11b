"""Full fine-tuning: the baseline every PEFT method is compared with."""

from __future__ import annotations

from peft_ir.tuning.arch import Arch
from peft_ir.tuning.config import Method, Part, TuningConfig, register


@register
class Full(Method):
    name = "full"
    order = 0
    summary = "every parameter of the encoder trains"
    allows_aside = False
    merge_blocker = None  # nothing was added: the trained weights are the model

    def parts(self, arch: Arch, config: TuningConfig) -> list[Part]:
        total = sum(p.numel() for _, p in arch.encoder_parameters())
        return [Part("all encoder parameters", arch.name_of(arch.encoder) or "the whole encoder", total, 1)]

    def inject(self, arch: Arch, config: TuningConfig) -> None:
        arch.encoder.requires_grad_(True)
