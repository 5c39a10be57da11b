"""Pick a method's sizes so that its trainable share hits a target (the paper compares at 0.5 % and 6.7 %).

Sizes passed in `fixed` stay as given; the others (the method's `budget_fields`, plus `ar` when aside modules are
attached) follow one free integer k, the k whose closed-form count comes closest to target share x base
parameters:
- Houlsby adapters with aside modules (iaa-s/l/m, or adapter + aside) with both r and ar free: r = k and
  ar = round(rho · k), where rho keeps the paper's ar:r ratio (Ma et al. 2022 publish IAA-L r=12, ar=12 at 0.5 %
  and r=50, ar=300 at 6.7 %): rho = 1 at or below 0.5 %, 6 at or above 6.7 %, and between them interpolated
  linearly in log budget (log rho against log share). One common k would put a third of the parameters in the
  aside modules at every budget, where the paper's 6.7 % setting puts three quarters there. On BERT-base this gives
  iaa-l r=50, ar=300 at 6.7 % (the paper's sizes) and r = ar = 9 at 0.5 % (0.48 %; the paper's 12/12 is 0.63 %).
- every other method: every free size is set to k (e.g. mam's prefix_len and r; lora's lora_r and ar with aside).
Fixing one size solves the other alone: iaa-l with r=50 at 6.7 % gives ar = 296.

The target counts the method's own parameters only. A cross-encoder's task head trains alike under every method
(and on all-MiniLM-L6-v2 the BERT pooler that belongs to it is 0.65 % of the model by itself, so a head-inclusive
0.5 % budget would be unreachable); the share reported after tuning still includes the head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from peft_ir.errors import PeftIRError
from peft_ir.tuning.apply import HEAD_PARTS, config_parts, trainable_parameters
from peft_ir.tuning.arch import Arch, detect
from peft_ir.tuning.aside import aside_parts
from peft_ir.tuning.config import TuningConfig, get_method, parse_share
from peft_ir.tuning.methods.adapter import Adapter

MAX_SIZE = 1 << 16
TOLERANCE = 0.25  # relative distance from the target beyond which the budget is reported as unreachable
# The paper's IAA-L settings (Ma et al. 2022): (budget, r, ar).
PAPER_IAA = ((0.005, 12, 12), (0.067, 50, 300))


@dataclass(frozen=True)
class BudgetChoice:
    """The chosen config and a one-line account of which sizes were chosen and why (for `describe`)."""

    config: TuningConfig
    note: str


def count(arch: Arch, config: TuningConfig) -> int:
    """Closed-form count of the parameters that `config` trains on `arch`, the task head excluded."""
    return sum(part.total for part in config_parts(arch, config) if part.what not in HEAD_PARTS)


def iaa_ratio(share: float) -> float:
    """The paper's ar:r at a budget: 1 up to 0.5 %, 6 from 6.7 %, log-log interpolated between."""
    (b0, r0, a0), (b1, r1, a1) = PAPER_IAA
    t = min(1.0, max(0.0, math.log(share / b0) / math.log(b1 / b0)))
    return (a0 / r0) ** (1.0 - t) * (a1 / r1) ** t


def _ratio_reason(share: float, rho: float) -> str:
    (b0, r0, a0), (b1, r1, a1) = PAPER_IAA
    if share <= b0 * (1 + 1e-9):
        return f"ar = r, the paper's ratio at its {100 * b0:g} % setting (IAA-L r={r0}, ar={a0})"
    if share >= b1 * (1 - 1e-9):
        return f"ar = {a1 / r1:g} r, the paper's ratio at its {100 * b1:g} % setting (IAA-L r={r1}, ar={a1})"
    return (f"ar = {rho:.2f} r, between the paper's ar = r at {100 * b0:g} % and ar = {a1 / r1:g} r at "
            f"{100 * b1:g} %, interpolated in log budget")


def budget_choice(model: nn.Module, method: str, share: float | str, **fixed: Any) -> BudgetChoice:
    """`budget_config` with the account of its choice (see the module docstring for the rule)."""
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

    rho: float | None = None  # ar = rho · r for Houlsby adapters + aside modules (the paper's IAA ratio)
    reason = "one common size for every free size" if len(knobs) > 1 else ""
    if isinstance(get_method(method), Adapter) and probe.aside is not None and set(knobs) == {"r", "ar"}:
        rho = iaa_ratio(target_share)
        reason = _ratio_reason(target_share, rho)

    def make(k: int) -> TuningConfig:
        sizes = {name: k for name in knobs}
        if rho is not None:
            sizes["ar"] = max(1, round(rho * k))
        return TuningConfig(method=method, **fixed, **sizes)

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
    chosen = ", ".join(f"{n}={getattr(config, n)}" for n in knobs)
    if abs(reached - target) > TOLERANCE * target:
        raise PeftIRError(
            f"method {method} cannot reach {target_share:.4%} of {total:,} parameters on this model: "
            f"the closest ({chosen}) trains {reached / total:.4%}"
        )
    why = [reason] if reason else []
    if fixed_sizes := [f"{n}={v}" for n, v in fixed.items() if n in config.used_fields()]:
        why.append(f"{', '.join(fixed_sizes)} as given")
    if config.aside is not None:
        aside = sum(p.total for p in aside_parts(arch, config.aside, config.ar))
        why.append(f"aside modules {100 * aside / reached:.1f} % of the method's parameters")
    note = f"sizes chosen for {100 * target_share:g} %: {chosen}" + (f" ({'; '.join(why)})" if why else "")
    return BudgetChoice(config, note)


def budget_config(model: nn.Module, method: str, share: float | str, **fixed: Any) -> TuningConfig:
    """A TuningConfig for `method` whose own share of the base parameters (head excluded) is closest to `share`."""
    return budget_choice(model, method, share, **fixed).config
