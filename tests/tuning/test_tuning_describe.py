"""`describe` and `peft-ir tuning describe`: sizes, trainable count and share, placements."""

from __future__ import annotations

import pytest

from peft_ir.cli import main
from peft_ir.tuning import TuningConfig, apply_tuning, describe


def test_describe_reports_sizes_counts_and_placements(bert_base) -> None:
    text = describe(bert_base, TuningConfig(method="iaa-l", r=12, ar=12))
    assert "r=12 ar=12" in text
    assert "691,632 parameters = 0.63 %" in text
    assert "109,482,240 base parameters" in text
    assert "after encoder.layer.{0..11}.attention.output.dense" in text
    assert "after encoder.layer.{0..11}.output.dense" in text
    assert "input of encoder.layer.{0..11} -> added after its last Add & Norm" in text
    assert "mergeable  no" in text


def test_describe_a_tuned_cross_encoder_reports_the_head_and_measured_count(tiny) -> None:
    model = apply_tuning(tiny.model("distilbert", "cross"), TuningConfig(method="lora", lora_r=2))
    text = describe(model)
    assert "distilbert.transformer.layer.{0,1}" not in text  # two layers are written {0..1}
    assert "distilbert.transformer.layer.{0..1}.attention.q_lin" in text
    assert "task head (always trains)" in text and "pre_classifier, classifier" in text
    assert "measured" in text and "mergeable  yes" in text


def test_cli_describe_bert_base_budget(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["tuning", "describe", "--model", "bert-base-config", "--method", "iaa-l", "--budget", "6.7%",
               "--r", "50"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "r=50 ar=296" in out
    assert "7,331,472 parameters = 6.70 %" in out


def test_cli_describe_default_model_is_minilm(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tuning", "describe", "--method", "adapter", "--r", "16"]) == 0
    out = capsys.readouterr().out
    assert "6 layers, hidden 384" in out
    assert f"{2 * 6 * (2 * 384 * 16 + 16 + 384):,} parameters" in out


def test_cli_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tuning", "describe", "--method", "nope"]) == 2
    assert "unknown tuning method 'nope'" in capsys.readouterr().err
    assert main(["tuning", "describe", "--method", "lora", "--r", "4"]) == 2
    assert "r does not apply to method lora" in capsys.readouterr().err
