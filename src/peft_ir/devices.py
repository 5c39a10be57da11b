"""Which device a process computes on, and what it says about it.

One rule for every stage (training, encoding, re-ranking): the GPU of this process's LOCAL_RANK under torchrun
(set as the current device before any model is built, so N ranks do not all start on GPU 0), else the current
GPU, else the CPU. A GPU that the NVIDIA driver lists but torch cannot use (PyPI's torch is a CUDA 13 build,
which needs driver >= 580) is refused with the way out, instead of a run that silently trains on the CPU.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from peft_ir.errors import PeftIRError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PROC_GPUS = Path("/proc/driver/nvidia/gpus")   # one folder per GPU the loaded NVIDIA driver manages
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def parse_device(text: str) -> str:
    """argparse type of --device: auto, cpu, cuda or cuda:N."""
    import argparse  # noqa: PLC0415

    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; choose {DEVICE_CHOICES}")
    return text


def driver_gpus() -> list[str]:
    """The GPUs the NVIDIA driver manages (`nvidia-smi -L` lines, or /proc/driver/nvidia/gpus entries); [] when no
    driver is loaded. Independent of torch, so it also sees GPUs a mismatched torch build cannot open."""
    if PROC_GPUS.is_dir():
        gpus = sorted(p.name for p in PROC_GPUS.iterdir())
        if gpus:
            return gpus
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.startswith("GPU ")]


def _gpus_hidden() -> bool:
    """CUDA_VISIBLE_DEVICES set to nothing (or -1): the user asked torch to see no GPU."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    return value is not None and value.strip() in ("", "-1")


def _driver_mismatch(gpus: list[str]) -> PeftIRError:
    import torch  # noqa: PLC0415
    cuda = torch.version.cuda or "none (a CPU-only build)"
    return PeftIRError(
        f"{len(gpus)} GPU(s) are visible to the NVIDIA driver ({gpus[0]}{', ...' if len(gpus) > 1 else ''}) but not "
        f"to torch {torch.__version__} (built for CUDA {cuda}): the driver is older than this torch build needs "
        "(PyPI's torch is built for CUDA 13, which needs driver >= 580; see `nvidia-smi`). Install the torch build "
        "for your driver with `make clean && make install TORCH=cu126` (or cu128), or run on the CPU on purpose: "
        "--device cpu where the command has it, or CUDA_VISIBLE_DEVICES= for any command")


def device_for_process(requested: str = "auto") -> str:
    """The device this process computes on: `requested` ("auto", "cpu", "cuda", "cuda:N") resolved against
    LOCAL_RANK and the GPUs torch sees.

    "auto" and "cuda" under torchrun give cuda:LOCAL_RANK, made the current device, so that nothing the rank
    allocates lands on GPU 0. Raises PeftIRError when a GPU is asked for (or, for "auto", present) but unusable.
    """
    import torch  # noqa: PLC0415 (imported where used: the CLI's parser needs this module, not torch)

    if requested == "cpu":
        return "cpu"
    if not _DEVICE.fullmatch(requested):
        raise PeftIRError(f"device {requested!r}: choose {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        gpus = [] if _gpus_hidden() else driver_gpus()
        if gpus:
            raise _driver_mismatch(gpus)
        if requested == "auto":
            return "cpu"
        raise PeftIRError(f"--device {requested}: torch sees no GPU (torch {torch.__version__}, CUDA "
                          f"{torch.version.cuda or 'none'}; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
    count = torch.cuda.device_count()
    if requested.startswith("cuda:"):
        index = int(requested.split(":")[1])
        if index >= count:
            raise PeftIRError(f"--device {requested}: torch sees {count} GPU(s) (cuda:0 to cuda:{count - 1})")
        return requested
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is None:
        return "cuda"
    index = int(local_rank)
    if index >= count:
        raise PeftIRError(f"LOCAL_RANK {index} but torch sees {count} GPU(s) on this machine: launch at most "
                          f"{count} processes per node (torchrun --nproc_per_node {count})")
    torch.cuda.set_device(index)
    return f"cuda:{index}"


def describe_device(device: str | torch.device) -> str:
    """"cuda:0 (NVIDIA H100 80GB HBM3)" or "cpu": what the logs say a stage runs on."""
    import torch  # noqa: PLC0415
    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def log_device(doing: str, device: str | torch.device) -> None:
    """One line per stage: "training on cuda:0 (NVIDIA ...)", with the rank under torchrun."""
    rank = os.environ.get("RANK") if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    log.info("%s%s on %s", f"rank {rank}: " if rank is not None else "", doing, describe_device(device))


def close_process_group() -> None:
    """Tear down the torch.distributed process group a torchrun stage opened (transformers' Trainer opens one and
    leaves it open). A process that exits with it alive can die with SIGABRT ("terminate called without an active
    exception") when gloo's worker threads meet the interpreter's teardown, after its work is done, and torchrun
    then reports the whole run as failed. A process that never imported torch.distributed has none to close."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask: a container's or a scheduler's share, not the host's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
