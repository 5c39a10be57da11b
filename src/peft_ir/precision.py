"""The precision a model computes in when it only scores (encoding, re-ranking): float32, bfloat16 or float16.

On a GPU the model is cast to the chosen type. On the CPU bfloat16 runs under torch's autocast: the weights stay
float32 and the matrix products run in bfloat16, which is about 2x faster where the CPU computes bfloat16 natively
(AVX512-BF16 or AMX: AMD Zen 4, Intel Sapphire Rapids and later; bench/results/cpu_bf16.md) and slower where it
emulates it. float16 has no fast CPU path and is refused there. Embeddings and scores are stored as float32
whatever the compute type. Training has its own `bf16` / `fp16` (the Trainer's mixed precision, training/args.py).
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Literal

from peft_ir.errors import PeftIRError

if TYPE_CHECKING:
    import torch

ComputeDtype = Literal["float32", "bfloat16", "float16"]
log = logging.getLogger(__name__)
_said_emulated = False  # warn_emulated_bf16 speaks once per process


def torch_dtype(name: ComputeDtype | None) -> torch.dtype | None:
    """The torch type of a compute precision; None for float32 (the model as loaded)."""
    import torch  # noqa: PLC0415

    if name in (None, "float32"):
        return None
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def check_dtype(dtype: torch.dtype | None, device: str) -> None:
    """Refuse float16 on the CPU (no fast path: use bfloat16)."""
    import torch  # noqa: PLC0415

    if dtype is torch.float16 and str(device) == "cpu":
        raise PeftIRError("float16 needs a GPU; on the CPU use bfloat16 (native on AVX512-BF16 / AMX CPUs)")
    if dtype is torch.bfloat16 and str(device) == "cpu":
        warn_emulated_bf16("scoring")


def warn_emulated_bf16(what: str) -> None:
    """Warn, once per process, that `what` runs in bfloat16 on a CPU that emulates it: oneDNN's emulation is slower
    than float32, not faster (a training step 11x slower on an AVX2 machine, bench/results/cpu_bf16.md), which a
    run would otherwise show only in its step times. Not refused: the result is the same, only slower."""
    global _said_emulated
    if _said_emulated or cpu_native_bf16():
        return
    _said_emulated = True
    log.warning("%s in bfloat16 on a CPU without native bfloat16 (AVX512-BF16 or AMX): it is emulated, several times "
                "slower than float32 (bench/results/cpu_bf16.md). On this CPU float32 is faster: `precision: auto` "
                "chooses it (or --set precision=float32; without --bf16 / --dtype bfloat16 on the command line)", what)


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles), as oneDNN's fast kernels need."""
    import torch  # noqa: PLC0415

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def autocast(device: str | torch.device, dtype: torch.dtype | None) -> AbstractContextManager[object]:
    """torch's autocast to `dtype` on the device's type; a no-op for float32 (None)."""
    import torch  # noqa: PLC0415

    if dtype is None:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
