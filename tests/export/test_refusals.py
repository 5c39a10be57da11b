"""What `peft-ir export` refuses, before loading any model, and that a failed export leaves nothing behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from export_texts import Variant

from peft_ir.cli import main
from peft_ir.errors import InputError, PeftIRError
from peft_ir.export import formats
from peft_ir.export.build import export_model
from peft_ir.export.config import ExportConfig


@pytest.fixture
def no_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every writer fails the test if reached: a refusal must come before any model is loaded."""
    for name in ("write_sentence_transformers", "write_cross_encoder", "write_hf", "write_peft"):
        monkeypatch.setattr(formats, name, lambda *a, **k: pytest.fail("a model was loaded before the refusal"))


def _export(train_dir: Path, out: Path, fmt: str, merge: bool = False) -> None:
    export_model(train_dir, ExportConfig(format=fmt, output=str(out), merge=merge))


@pytest.mark.parametrize("kind, method, sizes, fmt, merge, message", [
    ("retriever", "adapter", {"r": 4}, "onnx", False, "unknown export format 'onnx'; choose one of"),
    ("retriever", "adapter", {"r": 4}, "sentence-transformers", True,
     "--merge: method adapter cannot be merged into the base model: the adapters' non-linearity"),
    ("reranker", "prefix", {"prefix_len": 4}, "hf", False, "--format hf .*method prefix cannot be merged"),
    ("retriever", "lora", {"lora_r": 4, "aside": "layer"}, "sentence-transformers", True,
     "method lora cannot be merged .*aside modules"),
    ("retriever", "iaa-l", {"r": 4, "ar": 4}, "peft", False, "--format peft holds a LoRA adapter; .* iaa-l"),
    ("retriever", "lora", {"lora_r": 4}, "peft", True, "--merge with --format peft"),
    ("reranker", "lora", {"lora_r": 4, "aside": "layer"}, "peft", False, "LoRA with aside modules"),
    ("reranker", "lora", {"lora_r": 4}, "sentence-transformers", False, "holds a reranker; --format "
                                                                        "sentence-transformers is for a retriever"),
    ("retriever", "full", {}, "cross-encoder", False, "holds a retriever; --format cross-encoder is for a reranker"),
])
def test_refused_combinations(kind: str, method: str, sizes: dict, fmt: str, merge: bool, message: str,
                              variant: Variant, tmp_path: Path, no_model_loading: None) -> None:
    with pytest.raises(PeftIRError, match=message):
        _export(variant(kind, method, **sizes), tmp_path / "out", fmt, merge)
    assert not (tmp_path / "out").exists()


def test_refused_outputs(variant: Variant, tmp_path: Path, no_model_loading: None) -> None:
    train_dir = variant("retriever", "lora", lora_r=4)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(PeftIRError, match="exists and is not empty"):
        _export(train_dir, tmp_path / "full", "peft")
    (tmp_path / "file").write_text("x")
    with pytest.raises(PeftIRError, match="exists and is not a folder"):
        _export(train_dir, tmp_path / "file", "peft")
    assert (tmp_path / "full" / "x.txt").read_text() == "x"


def test_refused_train_dirs(variant: Variant, tmp_path: Path, no_model_loading: None) -> None:
    with pytest.raises(PeftIRError, match="is not a folder"):
        _export(tmp_path / "missing", tmp_path / "o", "peft")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PeftIRError, match=r"not a peft-ir training output: it lacks adapter/tuning_config.json, "
                                          r"summary.json, encoder.json or cross_encoder.json"):
        _export(tmp_path / "empty", tmp_path / "o", "peft")
    shutil.copytree(variant("retriever", "lora", lora_r=4), tmp_path / "run" / "retriever")
    with pytest.raises(PeftIRError, match=r"lacks .*; a run folder's models are in .*run/retriever$"):
        _export(tmp_path / "run", tmp_path / "o", "peft")
    bad = tmp_path / "bad"
    shutil.copytree(variant("retriever", "lora", lora_r=4), bad)
    (bad / "summary.json").write_text('{"method": "lora",\n "steps": }')
    with pytest.raises(InputError, match=r"summary.json:2: invalid JSON"):
        _export(bad, tmp_path / "o", "peft")
    shutil.copyfile(variant("retriever", "lora", lora_r=4) / "summary.json", bad / "summary.json")
    spec = json.loads((bad / "encoder.json").read_text()) | {"pooling_mode": "max"}
    (bad / "encoder.json").write_text(json.dumps(spec))
    with pytest.raises(InputError, match=r"encoder.json: field 'pooling_mode': not a EncoderSpec field"):
        _export(bad, tmp_path / "o", "peft")
    assert not (tmp_path / "o").exists()


def test_cli_refusals_exit_2_with_the_reason(variant: Variant, tmp_path: Path, capsys: pytest.CaptureFixture,
                                             no_model_loading: None) -> None:
    train_dir = str(variant("retriever", "adapter", r=4))
    assert main(["export", train_dir, "--format", "peft", "--output", str(tmp_path / "o")]) == 2
    assert "peft-ir export: error: --format peft holds a LoRA adapter" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["export", train_dir, "--format", "onnx", "--output", str(tmp_path / "o")])
    assert exit_.value.code == 2 and "invalid choice: 'onnx'" in capsys.readouterr().err


def test_a_failed_export_leaves_no_folder(variant: Variant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_written(model, out: Path, merged: bool) -> None:  # type: ignore[no-untyped-def]
        (out / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(formats, "write_sentence_transformers", half_written)
    with pytest.raises(OSError, match="disk full"):
        _export(variant("retriever", "adapter", r=4), tmp_path / "out", "sentence-transformers")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("family, kind, fmt, merge", [("qwen3", "retriever", "hf", False),
                                                      ("qwen2", "reranker", "cross-encoder", True),
                                                      ("mistral", "retriever", "sentence-transformers", True)])
def test_bitfit_biases_without_a_config_switch_are_refused_merged(family: str, kind: str, fmt: str, merge: bool,
                                                                   variant: Variant, tiny_decoder_dir, tmp_path: Path,
                                                                   no_model_loading: None) -> None:
    """BitFit's zero biases on Qwen2/Qwen3/Mistral projections have no config switch: a plain folder would drop them,
    so a merged export is refused (from the base's config alone), naming the format that keeps them."""
    from peft_ir.reranker.config import CrossEncoderSpec
    from peft_ir.retriever.config import EncoderSpec

    model = str(tiny_decoder_dir(family))
    spec = EncoderSpec(model=model) if kind == "retriever" else CrossEncoderSpec(model=model)
    own = "sentence-transformers" if kind == "retriever" else "cross-encoder"
    with pytest.raises(PeftIRError, match=rf"method bitfit cannot be merged .* BitFit adds zero biases to the {family} "
                                          rf"model's .*mlp.down_proj .*would silently drop them; export it without "
                                          rf"--merge as {own} \(the base plus a peft-ir module\)"):
        _export(variant(kind, "bitfit", spec=spec), tmp_path / "out", fmt, merge)
    assert not (tmp_path / "out").exists()
