"""The small trainable modules the methods add, and how they hook into a frozen encoder.

Every added module derives from `TuningModule`, so counting and saving can tell added parameters from base
ones. Modules are attached as children of the layer they act on (so they appear in `named_parameters()` and
`state_dict()` under readable names, and the base weights keep their names) and act through forward hooks whose
callables are bound methods of the module itself (so `copy.deepcopy` of the model re-binds them correctly).
The modules stay float32 on a bfloat16/float16 base (tuning/precision.py): they compute on their input cast to their
own dtype and hand back their output in the dtype of the tensor it is added to.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from peft_ir.tuning.precision import trainable_dtype

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


class TuningModule(nn.Module):
    """Marker base class of every module added by peft-ir tuning."""


class TrainsWhole(nn.Module):
    """Marker base class of a module a model is built with besides its pretrained weights (a re-ranker's
    cross-attention gates, reranker/gated.py) that trains whole under every method, as a task head does: `detect`
    lists it in the head."""


def bottleneck_params(d: int, r: int) -> int:
    """Closed form of one bottleneck d -> r -> d with biases: W_down (r*d) + b_down (r) + W_up (d*r) + b_up (d)."""
    return 2 * d * r + r + d


class Bottleneck(TuningModule):
    """BN(z) = s * (W_up · act(W_down · z + b_down) + b_up), W_up and b_up zero so BN(z) = 0 at init."""

    def __init__(self, d: int, r: int, activation: str = "relu", scale: float = 1.0):
        super().__init__()
        self.down = nn.Linear(d, r)
        self.act = _ACTIVATIONS[activation]()
        self.up = nn.Linear(r, d)
        self.scale = float(scale)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.up(self.act(self.down(z.to(self.down.weight.dtype))))
        return (out if self.scale == 1.0 else out * self.scale).to(z.dtype)

    def extra_repr(self) -> str:
        return f"scale={self.scale}" if self.scale != 1.0 else ""


def _first_tensor(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    value = kwargs.get("hidden_states", kwargs.get("input"))
    if isinstance(value, torch.Tensor):
        return value
    raise RuntimeError("peft-ir tuning: could not find the hidden states among the hooked module's inputs")


def _add_to_output(output: Any, delta: torch.Tensor) -> Any:
    if isinstance(output, torch.Tensor):
        return output + delta.to(output.dtype)
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return (output[0] + delta.to(output[0].dtype), *output[1:])
    raise RuntimeError(f"peft-ir tuning: cannot add to a module output of type {type(output).__name__}")


class SeriesAdapter(Bottleneck):
    """Houlsby adapter in series on a sub-layer's output o (after its projection and dropout): o + BN(o)."""

    def attach(self, target: nn.Module) -> None:
        target.register_forward_hook(self._after)

    def _after(self, module: nn.Module, args: tuple, output: Any) -> Any:
        return output + self(output)


class SideBottleneck(Bottleneck):
    """A bottleneck on a side path: reads x at the input of `source`, adds BN(x) to the output of `target`.

    Used for the aside modules (x_l -> after Layer_l's last Add & Norm, etc.) and the parallel adapter (FFN input
    -> FFN output projection). The source's input is held only between the two hooks of one forward pass.
    """

    _captured: torch.Tensor | None = None

    def attach(self, source: nn.Module, target: nn.Module) -> None:
        source.register_forward_pre_hook(self._capture, with_kwargs=True)
        target.register_forward_hook(self._inject)

    def _capture(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self._captured = _first_tensor(args, kwargs)

    def _inject(self, module: nn.Module, args: tuple, output: Any) -> Any:
        x = self._captured
        if x is None:
            raise RuntimeError("peft-ir tuning: side module ran without its source input (hooks out of order)")
        self._captured = None
        return _add_to_output(output, self(x))


def place(module: TuningModule, like: torch.Tensor) -> TuningModule:
    """Move a freshly built module to the device of the base weights, in their dtype but float32 for a half-precision
    base (AdamW's updates would round away in bfloat16: tuning/precision.py), and mark it trainable."""
    module.to(device=like.device, dtype=trainable_dtype(like.dtype))
    module.requires_grad_(True)
    return module
