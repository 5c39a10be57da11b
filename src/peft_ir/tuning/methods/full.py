"""Full fine-tuning: the baseline every PEFT method is compared with."""

from __future__ import annotations

import logging

import torch

from peft_ir.tuning.arch import Arch
from peft_ir.tuning.config import Method, Part, TuningConfig, register
from peft_ir.tuning.precision import half_dtype

log = logging.getLogger(__name__)


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
        half = half_dtype(arch.model)
        if half is not None:  # AdamW's updates would round away in half precision (tuning/precision.py)
            arch.model.to(torch.float32)
            size = sum(p.numel() for p in arch.model.parameters()) * 4 / 1e9
            log.info("full fine-tuning of a %s checkpoint: training in float32 (master weights); %.2f GB of "
                     "weights, AdamW's state twice that", str(half).removeprefix("torch."), size)
        arch.encoder.requires_grad_(True)
