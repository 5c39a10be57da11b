"""What every benchmark shares: one line describing the machine it ran on, and writing its result file."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Mapping
from pathlib import Path


def describe() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            kb = int(next(line.split()[1] for line in fh if line.startswith("MemTotal")))
        mem = f", {kb / 1024**2:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    # the same model name can hide different vector units (an AVX2 and an AVX512-BF16 "AMD EPYC" were both lent)
    from peft_ir.precision import cpu_native_bf16

    cpu += f" ({torch.backends.cpu.get_cpu_capability()}{', native bfloat16' if cpu_native_bf16() else ''})"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores{mem}, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, threads {torch.get_num_threads()}")


def write_result(text: str, output: str | Path) -> None:
    """Write a result file whole or not at all (temporary name, then rename), creating its folder."""
    from peft_ir.atomic import atomic_open

    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(output) as fh:
        fh.write(text)


def publish(text: str, output: str | Path | None) -> None:
    """Print a result and, when `output` is given, write it (see write_result)."""
    print(text)
    if output:
        write_result(text, output)


def time_rounds(variants: Mapping[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each variant, `rounds` times, the variants alternating within each round so that the
    machine's drift touches all of them alike (call each once beforehand to warm up)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times
