"""Pick a method's sizes so that its trainable share hits a target (the paper compares at 0.5 % and 6.7 %).

Sizes passed in `fixed` stay as given; every other budget size of the method (its `budget_fields`, plus `ar`
when aside modules are attached) is set to one common integer k, the k whose closed-form count comes closest to
target share x base parameters. E.g. iaa-l at 0.5 % on BERT-base gives r = ar = 9 (0.48 %); fixing r=50 at 6.7 %
solves ar = 296 (the paper used 300).

The target counts the method's own parameters only. A cross-encoder's task head trains alike under every method
(and on all-MiniLM-L6-v2 the BERT pooler that belongs to it is 0.65 % of the model by itself, so a head-inclusive
0.5 % budget would be unreachable); the share reported after tuning still includes the head.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from peft_ir.errors import PeftIRError
from peft_ir.tuning.apply import HEAD_PARTS, config_parts, trainable_parameters
from peft_ir.tuning.arch import Arch, detect
from peft_ir.tuning.config import TuningConfig, parse_share
from peft_ir.tuning.registry import get_method

MAX_SIZE = 1 << 16
TOLERANCE = 0.25  # relative distance from the target beyond which the budget is reported as unreachable


def count(arch: Arch, config: TuningConfig) -> int:
    """Closed-form count of the parameters that `config` trains on `arch`, the task head excluded."""
    return sum(part.total for part in config_parts(arch, config) if part.what not in HEAD_PARTS)


def budget_config(model: nn.Module, method: str, share: float | str, **fixed: Any) -> TuningConfig:
    """A TuningConfig for `method` whose own share of the base parameters (head excluded) is closest to `share`."""
    target_share = parse_share(share)
    arch = detect(model)
    _, total = trainable_parameters(model)
    target = target_share * total
    probe = TuningConfig(method=method, **fixed)
    knobs = [f for f in get_method(method).budget_fields if f not in fixed]
    if probe.aside is not None and "ar" not in knobs and "ar" not in fixed:
        knobs.append("ar")
    if not knobs:
        what = "has no size to choose" if not get_method(method).budget_fields else "has all its sizes fixed"
        raise PeftIRError(f"method {method} {what}; its share is {count(arch, probe) / total:.4%}")

    def make(k: int) -> TuningConfig:
        return TuningConfig(method=method, **fixed, **{name: k for name in knobs})

    lo, hi = 1, MAX_SIZE  # smallest k with count >= target (counts grow with k)
    while lo < hi:
        mid = (lo + hi) // 2
        if count(arch, make(mid)) >= target:
            hi = mid
        else:
            lo = mid + 1
    candidates = [k for k in (lo - 1, lo) if k >= 1]
    best = min(candidates, key=lambda k: abs(count(arch, make(k)) - target))
    config = make(best)
    reached = count(arch, config)
    if abs(reached - target) > TOLERANCE * target:
        raise PeftIRError(
            f"method {method} cannot reach {target_share:.4%} of {total:,} parameters on this model: "
            f"the closest ({', '.join(f'{n}={best}' for n in knobs)}) trains {reached / total:.4%}"
        )
    return config
