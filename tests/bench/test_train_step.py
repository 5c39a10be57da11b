"""The training-step benchmark (bench/train_step.py) on a tiny decoder and synthetic data: its arguments, one
measured step without and with gradient checkpointing (enabled as training enables it), BitFit on a decoder
without biases, and the two table layouts. No timing is asserted."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "train_step.py"
COMMITTED = SCRIPT.parent / "results" / "train_step.md"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The script as a module."""
    spec = importlib.util.spec_from_file_location("train_step_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_defaults_repeat_the_committed_table_and_models_can_be_named_twice(bench) -> None:  # type: ignore
    committed = next(line for line in COMMITTED.read_text().splitlines() if line.startswith("Command: `"))
    argv = committed.removeprefix("Command: `python bench/train_step.py ").removesuffix("`").split()
    args = bench.parse_args(argv)
    assert args.models == ["minilm"] and args.gradient_checkpointing == "off"
    assert f"Command: `{bench.command(args)}`" == committed  # no new flag in the default command
    args = bench.parse_args(["--model", "tiny-qwen3", "--model", "minilm", "tiny-qwen3",
                             "--gradient-checkpointing", "both"])
    assert args.models == ["tiny-qwen3", "minilm"]
    assert bench.command(args).startswith("python bench/train_step.py --model tiny-qwen3 --model minilm "
                                          "--gradient-checkpointing both --methods full")
    with pytest.raises(SystemExit):
        bench.parse_args(["--model", "gpt-5"])


def _child(bench, capsys, model: Path, data: Path, method: str, checkpointing: str) -> dict:  # type: ignore
    args = bench.parse_args(["--child", method, "--model-path", str(model), "--data", str(data), "--budget", "5%",
                             "--checkpointing", checkpointing, "--batch-size", "4", "--max-length", "16",
                             "--steps", "1"])
    out = bench.child(args)
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith('{"method": ')  # what the parent reads
    return out


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft calls it
@pytest.mark.parametrize("method", ["iaa-l", "lora"])
def test_a_decoder_step_with_checkpointing_recomputes_every_layer_and_gives_the_same_loss(
        bench, capsys, count_checkpoints, cpu_only, tiny_decoder_dir, synthetic_beir: Path, method: str) -> None:
    model = tiny_decoder_dir("qwen3")
    plain = _child(bench, capsys, model, synthetic_beir, method, "off")
    calls = count_checkpoints()
    on = _child(bench, capsys, model, synthetic_beir, method, "on")
    assert plain["checkpointed"] == 0 and on["checkpointed"] == on["layers"] == 2
    assert calls["n"] >= 2 * 2  # each of the two layers, in each of the two steps
    assert on["pooling"] == "lasttoken" and on["append_eos"] is True  # the decoder retriever recipe
    assert 0 < on["trainable"] == plain["trainable"] < on["total"]
    assert on["loss"] == pytest.approx(plain["loss"], rel=1e-5)
    assert len(on["times"]) == 1 and on["rss_mib"] > 0


def test_bitfit_on_a_decoder_without_biases_trains_its_added_biases(bench, capsys, cpu_only, tiny_decoder_dir,
                                                                    synthetic_beir: Path) -> None:
    """Qwen3 has no biases: BitFit adds zero ones to every projection of its layers and times their training."""
    out = _child(bench, capsys, tiny_decoder_dir("qwen3"), synthetic_beir, "bitfit", "off")
    assert 0 < out["trainable"] < out["total"] and len(out["times"]) == 1


def _run(trainable: int, times: list[float], rss: float) -> dict:
    return {"trainable": trainable, "total": 1000, "times": times, "rss_mib": rss, "loss": 2.0,
            "config": {"method": "x", "r": 8, "seed": 0}}


def test_the_checkpointing_table_divides_on_by_off_per_model(bench) -> None:  # type: ignore[no-untyped-def]
    args = bench.parse_args(["--model", "minilm", "tiny-qwen3", "--gradient-checkpointing", "both",
                             "--methods", "full", "bitfit", "--rounds", "2"])
    results = {}
    for model in args.models:
        results[(model, "full", "off")] = [_run(1000, [2.0, 2.0], 900.0), _run(1000, [2.0], 1000.0)]
        results[(model, "full", "on")] = [_run(1000, [3.0], 800.0), _run(1000, [3.0, 9.0, 3.0], 700.0)]
    results[("minilm", "bitfit", "off")] = results[("minilm", "bitfit", "on")] = [_run(10, [1.0], 500.0)]
    results[("tiny-qwen3", "bitfit", "off")] = [_run(20, [1.0], 400.0)]
    results[("tiny-qwen3", "bitfit", "on")] = [_run(20, [1.5], 300.0)]
    text = bench.render(results, args, "a test machine")
    assert text.startswith("# Gradient checkpointing per method")
    assert "## minilm: all-MiniLM-L6-v2" in text and "## tiny-qwen3: a random Qwen3 decoder" in text
    rows = [line for line in text.splitlines() if line.startswith("| full |")]
    assert len(rows) == 4  # off and on, per model
    assert rows[0] == "| full | off | 1,000 | 100.00% | 2.00 | | 1,000 | | r=8 |"
    assert rows[1] == "| full | on | 1,000 | 100.00% | 3.00 | 1.50 | 800 | 0.80 | |"  # median, largest RSS
    assert "| bitfit | on | 20 | 2.00% | 1.50 | 1.50 | 300 | 0.75 | |" in text
    assert "relative 0.0e+00" in text


def test_one_setting_keeps_the_table_against_full(bench) -> None:  # type: ignore[no-untyped-def]
    args = bench.parse_args(["--methods", "full", "lora", "--rounds", "1"])
    results = {("minilm", "full", "off"): [_run(1000, [2.0], 1000.0)],
               ("minilm", "lora", "off"): [_run(5, [1.5], 900.0)]}
    lines = bench.render(results, args, "a test machine").splitlines()
    committed = COMMITTED.read_text().splitlines()
    assert lines[0] == committed[0] and lines[8:10] == committed[8:10]  # title, the table's header
    assert "| lora | 5 | 0.50% | 1.50 | 0.75 | 900 | 0.90 | r=8 |" in lines
    assert "##" not in "\n".join(lines)
