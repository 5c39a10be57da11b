"""The machine line every bench result carries: it names the CPU's vector unit and whether it has native bfloat16,
which the model name alone does not tell (an AVX2 and an AVX512-BF16 "AMD EPYC" gave 11x apart bfloat16 steps)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from machine import describe  # noqa: E402


@pytest.mark.parametrize("capability, native, shown", [("AVX2", False, "(AVX2)"),
                                                       ("AVX512", True, "(AVX512, native bfloat16)")])
def test_the_machine_line_names_the_vector_unit(capability: str, native: bool, shown: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr("peft_ir.precision.cpu_native_bf16", lambda: native)
    line = describe()
    assert f"{shown}, " in line and line.index(shown) < line.index(" cores")
