"""The GPU check's CPU-independent parts (bench/gpu_check.py): arguments, the refusal without CUDA, running steps
independently, the report writer, and its ranking comparison. The GPU steps themselves run only on a GPU."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"
MACHINE = {"GPU": "NVIDIA Fake 80GB, 80 GiB, compute 9.0", "GPUs on the machine": "1", "driver": "570.1.2",
           "torch": "2.13.0+cu126 (CUDA 12.6)", "faiss": "1.14.1 (GPU build, sees 1 GPU(s))"}


@pytest.fixture
def check(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The script as a module, with CUDA_VISIBLE_DEVICES restored afterwards (main pins one GPU)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_gpu(check, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A check that believes it has a GPU and whose steps are fakes: one passes, one fails, one skips, one more
    passes after the failure (calls are recorded)."""
    calls: list[str] = []

    def ok(ctx, out):  # type: ignore[no-untyped-def]
        calls.append("ok")
        out["pairs/s"] = 1234.5678
        out["GPU-CPU gap"] = "3.0e-06"

    def boom(ctx, out):  # type: ignore[no-untyped-def]
        calls.append("boom")
        out["measured before"] = 7
        raise RuntimeError("Error in faiss::gpu::GpuIndexFlat\nk = 5000 is larger than 2048 | too large")

    def skip(ctx, out):  # type: ignore[no-untyped-def]
        calls.append("skip")
        raise check.Skip("not run (1 GPU)")

    def after(ctx, out):  # type: ignore[no-untyped-def]
        calls.append("after")
        check.require(ctx.steps == 3, "steps not passed on")

    steps = {name: check.Step(name, f"checks {name}", fn) for name, fn in
             (("ok", ok), ("boom", boom), ("skip", skip), ("after", after))}
    monkeypatch.setattr(check, "STEPS", steps)
    monkeypatch.setattr(check, "cuda_available", lambda visible: (True, ""))
    monkeypatch.setattr(check, "machine_facts", lambda: dict(MACHINE))
    return check, calls


def test_arguments_have_the_documented_defaults(check) -> None:  # type: ignore[no-untyped-def]
    args = check.parse_args([])
    assert args.steps == 8 and args.only is None
    assert Path(args.output) == SCRIPT.parent / "results" / "gpu_check.md"
    args = check.parse_args(["--only", "env", "faiss-hits", "--steps", "3", "--output", "x.md"])
    assert args.only == ["env", "faiss-hits"] and args.steps == 3 and args.output == "x.md"


def test_every_step_of_the_issue_is_registered(check) -> None:  # type: ignore[no-untyped-def]
    assert list(check.STEPS) == ["env", "device-logs", "methods", "train-retriever", "train-reranker", "bf16-train",
                                 "encode", "faiss-types", "faiss-hits", "torch-exact", "rerank-pinned", "rerank-30k",
                                 "quickstart", "torchrun"]


@pytest.mark.parametrize("argv, complaint", [
    (["--only", "nope"], "invalid choice: 'nope'"),
    (["--steps", "0"], "'0' is not a whole number >= 1"),
    (["--steps", "many"], "'many' is not a whole number >= 1"),
])
def test_bad_arguments_exit_2_with_a_message(check, capsys, argv, complaint) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exit_:
        check.main(argv)
    assert exit_.value.code == 2
    assert complaint in capsys.readouterr().err


def test_list_needs_no_gpu(check, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(check, "cuda_available", lambda *a: pytest.fail("--list must not look for a GPU"))
    assert check.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert "torchrun" in listed and "(d) a 2-process torchrun" in listed


def test_refuses_to_run_without_cuda(check, capsys, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(check, "cuda_available", lambda visible: (False, f"sees no CUDA GPU (visible {visible!r})"))
    monkeypatch.setattr(check, "run_step", lambda *a: pytest.fail("no step may run without CUDA"))
    report = tmp_path / "gpu_check.md"
    assert check.main(["--output", str(report)]) == check.EXIT_NO_CUDA == 3
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "sees no CUDA GPU (visible '')" in err  # the user's value, not the pin
    assert not report.exists()


def test_cuda_available_says_why_not_on_this_cpu_machine(check, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("peft_ir.devices.driver_gpus", lambda: ["GPU 0: NVIDIA H200"])
    ok, why = check.cuda_available()
    assert not ok and "driver lists 1 GPU(s)" in why and "TORCH=cu126" in why
    monkeypatch.setattr("peft_ir.devices.driver_gpus", lambda: [])
    ok, why = check.cuda_available("")
    assert not ok and "sees no CUDA GPU (CUDA_VISIBLE_DEVICES=''" in why


def test_steps_are_independent_and_the_report_says_pass_fail_skip(fake_gpu, tmp_path) -> None:  # type: ignore
    check, calls = fake_gpu
    report = tmp_path / "out" / "gpu_check.md"
    code = check.main(["--steps", "3", "--output", str(report), "--work", str(tmp_path / "work")])
    assert code == check.EXIT_FAILED == 1
    assert calls == ["ok", "boom", "skip", "after"]  # the failure stopped nothing
    text = report.read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()
            if line.startswith("| ") and "---" not in line}
    assert "**PASS**" in rows["ok"] and "pairs/s: 1235" in rows["ok"] and "GPU-CPU gap: 3.0e-06" in rows["ok"]
    assert "**FAIL**" in rows["boom"] and "measured before: 7" in rows["boom"]
    assert "k = 5000 is larger than 2048 \\| too large" in rows["boom"]  # the error's last line, escaped
    assert "Error in faiss" not in rows["boom"]
    assert "**SKIP**" in rows["skip"] and "not run (1 GPU)" in rows["skip"]
    assert "**PASS**" in rows["after"]
    assert "Result: 2 PASS, 1 FAIL, 1 SKIP" in text
    for fact in MACHINE.values():
        assert fact in text
    assert f"Command: `python bench/gpu_check.py --steps 3 --output {report}" in text


def test_only_runs_the_named_steps_and_passing_exits_0(fake_gpu, tmp_path) -> None:  # type: ignore[no-untyped-def]
    check, calls = fake_gpu
    report = tmp_path / "gpu_check.md"
    assert check.main(["--only", "after", "ok", "--steps", "3", "--output", str(report),
                       "--work", str(tmp_path / "work")]) == 0
    assert calls == ["ok", "after"]  # the check's order, not the command line's
    assert "Result: 2 PASS, 0 FAIL, 0 SKIP" in report.read_text()


def test_a_cut_short_report_says_so(check) -> None:  # type: ignore[no-untyped-def]
    done = [check.StepResult("env", "torch sees the GPU", check.PASS, {"GPU": "H200"}, "", 1.0)]
    text = check.render_report(done, MACHINE, "python bench/gpu_check.py", planned=13)
    assert "1 of 13 steps done (the check was cut short)" in text
    assert "cut short" not in check.render_report(done, MACHINE, "python bench/gpu_check.py", planned=1)


def test_the_report_is_written_whole_or_not_at_all(check, monkeypatch, tmp_path) -> None:  # type: ignore
    report = tmp_path / "gpu_check.md"
    report.write_text("the previous report\n")

    def refuse(*args):  # type: ignore[no-untyped-def]
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        check.write_report(report, "# GPU check\nnew text\n")
    assert report.read_text() == "the previous report\n"
    assert [p.name for p in tmp_path.iterdir()] == ["gpu_check.md"]  # no temporary left behind
    monkeypatch.undo()
    check.write_report(report, "# GPU check\nnew text\n")
    assert report.read_text() == "# GPU check\nnew text\n"


@pytest.mark.parametrize("visible, pinned", [(None, "0"), ("2,3", "2"), ("GPU-1a2b,GPU-3c4d", "GPU-1a2b"),
                                             ("", None), ("-1", None)])
def test_the_check_pins_the_first_visible_gpu(check, visible, pinned) -> None:  # type: ignore[no-untyped-def]
    assert check.first_visible_gpu(visible) == pinned


def test_ranking_gap_tolerates_tied_swaps_only(check) -> None:  # type: ignore[no-untyped-def]
    base = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)  # rows 1 and 2 tie
    queries = np.array([[1.0, 0.0]], dtype=np.float32)
    gap, same = check.ranking_gap(base, queries, [[0, 2, 1]], [[0, 1, 2]])
    assert gap == 0.0 and same == pytest.approx(1 / 3)
    gap, _ = check.ranking_gap(base, queries, [[0, 3, 1]], [[0, 1, 2]])  # row 3 scores 0, not 0.6
    assert gap == pytest.approx(0.6)
    assert check.ranking_gap(base, queries, [[0, 1]], [[0, 1, 2]])[0] == float("inf")


def test_importing_the_script_starts_no_torch() -> None:
    code = (f"import importlib.util, sys; s = importlib.util.spec_from_file_location('g', {str(SCRIPT)!r}); "
            "m = importlib.util.module_from_spec(s); sys.modules['g'] = m; s.loader.exec_module(m); "
            "print(sorted(n for n in ('torch', 'faiss', 'transformers') if n in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "[]"
