"""Tests whose results are compared exactly (resume, DDP on gloo, kill-and-rerun) run on the CPU even on a GPU box:
a single GPU cannot host a 2-process NCCL job, and non-deterministic CUDA kernels break exact-resume tolerances."""

from __future__ import annotations

import os

CPU_ONLY = {"CUDA_VISIBLE_DEVICES": ""}  # torch sees no GPU; peft-ir's driver check reads it as "CPU on purpose"


def cpu_env(**extra: str) -> dict[str, str]:
    """The environment of a subprocess that must run on the CPU (plus `extra`)."""
    return dict(os.environ, **CPU_ONLY, **extra)
