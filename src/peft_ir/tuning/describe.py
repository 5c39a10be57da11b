"""A human-readable account of a tuning config on a model: sizes, trainable count and share, placements."""

from __future__ import annotations

from torch import nn

from peft_ir.tuning.apply import config_parts, detect_tuned, trainable_parameters, tuning_state
from peft_ir.tuning.config import TuningConfig, get_method


def describe(model: nn.Module, config: TuningConfig | None = None, budget_note: str | None = None) -> str:
    """Describe `config` on `model` from the closed-form counts (the model is not changed).

    With a tuned model and no config, describes the applied config and also reports the measured count.
    `budget_note` (from `budget_choice`) says which sizes a budget chose and why.
    """
    state = tuning_state(model)
    if config is None:
        if state is None:
            raise ValueError("describe needs a config for an untuned model")
        config = state.config
    arch = detect_tuned(model, config)
    method = get_method(config.method)
    parts = config_parts(arch, config)
    trainable = sum(p.total for p in parts)
    measured, total = trainable_parameters(model)
    if arch.encoder is not arch.model:
        kind = "cross-encoder (sequence classification)"
    else:
        kind = "cross-encoder (gated cross attention)" if arch.head else "encoder"
    summary = method.summary
    if config.aside is not None and method.fixed_aside is None:
        summary += f" + aside modules ({config.aside})"
    family = f"; {arch.family}, pre-norm" if arch.pre_norm else ""
    kv = f" ({arch.num_kv_heads} key/value)" if arch.num_kv_heads != arch.num_heads else ""
    sizes = " ".join(f"{k}={v}" for k, v in config.sizes().items()) or "-"
    lines = [
        f"method     {config.method}: {summary}",
        f"model      {type(model).__name__} ({kind}{family}): {arch.num_layers} layers, hidden {arch.hidden}, "
        f"FFN {arch.intermediate}, {arch.num_heads} heads{kv}; {total:,} base parameters",
        f"sizes      {sizes}",
        *([f"budget     {budget_note}"] if budget_note else []),
        f"trainable  {trainable:,} parameters = {100 * trainable / total:.2f} % of the base "
        f"({trainable / total:.6f}; share = trainable / base parameters)",
    ]
    if state is not None and state.config == config:
        lines.append(f"measured   {measured:,} parameters require grad")
    lines.append("placements")
    width = max(len(p.what) for p in parts)
    for p in parts:
        count = f"{p.count} x {p.each:,}" if p.count > 1 else f"{p.each:,}"
        lines.append(f"  {p.what:<{width}}  {count:>16} = {p.total:>12,}  {p.where}")
    if arch.pooler is not None and arch.pooler not in arch.head:
        frozen = sum(p.numel() for p in arch.pooler[1].parameters())
        lines.append(f"pooler     {arch.pooler[0]} ({frozen:,}) stays frozen as part of the base "
                     "(train_pooler=true trains it with the head)")
    merge = "yes" if config.aside is None and method.merge_blocker_on(lambda: model) is None else "no"
    lines.append(f"mergeable  {merge}")
    return "\n".join(lines)
