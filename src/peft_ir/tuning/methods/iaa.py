"""IAA (Ma et al. 2022, "Scattered or Connected?"): Houlsby adapters plus aside modules.

The aside modules (see `peft_ir.tuning.aside`) give every adapter a short, fully trainable path to the output;
-s, -l and -m differ only in where they sit (per sub-layer, per layer, once across the model).
"""

from __future__ import annotations

from peft_ir.tuning.config import register
from peft_ir.tuning.methods.adapter import Adapter

MERGE_BLOCKER = "adapters and aside modules are non-linear side paths that cannot be folded into the base weights"


@register
class IaaS(Adapter):
    name = "iaa-s"
    order = 70
    summary = "Houlsby adapters + one aside module per sub-layer (IAA-S)"
    size_fields = ("r", "ar")
    budget_fields = ("r", "ar")
    defaults = {"r": 12, "ar": 12}
    fixed_aside = "sublayer"
    merge_blocker = MERGE_BLOCKER


@register
class IaaL(IaaS):
    name = "iaa-l"
    order = 71
    summary = "Houlsby adapters + one aside module per Transformer layer (IAA-L)"
    fixed_aside = "layer"


@register
class IaaM(IaaS):
    name = "iaa-m"
    order = 72
    summary = "Houlsby adapters + one aside module from the first layer's input to the last layer's output (IAA-M)"
    fixed_aside = "model"
