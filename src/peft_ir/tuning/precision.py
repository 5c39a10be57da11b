"""Float32 master weights on a half-precision checkpoint: what trains is float32, the frozen base keeps its dtype.

transformers 5 loads a checkpoint in the dtype it was saved in (bfloat16 for most LLMs). A bfloat16 weight holds 8
bits of mantissa, so AdamW's step of about the learning rate rounds away on a weight of magnitude 1 unless the
learning rate exceeds ~4e-3; the Trainer's --bf16 / --fp16 autocast presume float32 weights under them. As peft's
`autocast_adapter_dtype` does for its adapters, every parameter that trains is float32:
- the modules peft-ir adds are built in float32 and compute in it, their input cast in and their output cast back
  to the dtype of what they add to (modules.py, and prefix.py's PrefixKV.extend);
- peft's LoRA weights are upcast by peft's own `cast_adapter_dtype` (methods/lora.py);
- full fine-tuning upcasts the whole model (methods/full.py);
- base parameters that train in place (bitfit's biases, a cross-encoder's task head) become float32 masters here:
  at each forward their module computes with a copy in the checkpoint's dtype, through which the gradient reaches
  the master, so the module's frozen weights stay as they are and its output keeps the base's dtype.
Float32 checkpoints are left exactly as they are (nothing is half, nothing changes).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

HALF = (torch.float16, torch.bfloat16)
MASTERS_ATTR = "peft_ir_masters"  # on a module: {parameter name: the dtype its forward computes in}
_STASH_ATTR = "_peft_ir_stash"    # on a module, during its forward: {parameter name: the master swapped out}


def trainable_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a parameter trains in: float32 for a half-precision one, its own otherwise."""
    return torch.float32 if dtype in HALF else dtype


def half_dtype(model: nn.Module) -> torch.dtype | None:
    """The half-precision dtype of (some of) the model's parameters, None when it has none."""
    return next((p.dtype for p in model.parameters() if p.dtype in HALF), None)


def keep_float32_masters(model: nn.Module, added: set[int]) -> None:
    """Make every half-precision base parameter that trains (not in `added`, the ids of the added modules' own
    parameters) a float32 master of its module."""
    for module in model.modules():
        halves = {name: p.dtype for name, p in module.named_parameters(recurse=False)
                  if p.requires_grad and p.dtype in HALF and id(p) not in added}
        if not halves:
            continue
        for name in halves:
            module._parameters[name].data = module._parameters[name].data.float()
        if getattr(module, MASTERS_ATTR, None) is None:
            module.register_forward_pre_hook(_swap_in)
            module.register_forward_hook(_swap_out)
            setattr(module, MASTERS_ATTR, {})
        getattr(module, MASTERS_ATTR).update(halves)


def _swap_in(module: nn.Module, args: tuple) -> None:
    """Before the forward: each master out of `_parameters`, a copy in the computing dtype in (differentiable)."""
    stash = module.__dict__.setdefault(_STASH_ATTR, {})
    for name, dtype in getattr(module, MASTERS_ATTR).items():
        master = stash.setdefault(name, module._parameters[name])  # a forward that raised left its masters here
        module._parameters[name] = master.to(dtype)  # type: ignore[assignment]


def _swap_out(module: nn.Module, args: tuple, output: Any) -> None:
    """After the forward: the masters back in `_parameters`."""
    stash = module.__dict__.get(_STASH_ATTR, {})
    module._parameters.update(stash)
    stash.clear()


def release_masters(model: nn.Module) -> None:
    """Undo `keep_float32_masters` (merging): each master back in its module's dtype, the hooks removed."""
    for module in model.modules():
        masters = getattr(module, MASTERS_ATTR, None)
        if masters is None:
            continue
        _swap_out(module, (), None)
        for name, dtype in masters.items():
            module._parameters[name].data = module._parameters[name].data.to(dtype)
        for hooks, hook in ((module._forward_pre_hooks, _swap_in), (module._forward_hooks, _swap_out)):
            for key in [k for k, h in hooks.items() if h is hook]:
                del hooks[key]
        delattr(module, MASTERS_ATTR)
