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
    assert ("after encoder.layer.{0..11}.attention.output.dense and its dropout "
            "(encoder.layer.{0..11}.attention.output.dropout), before Add & Norm") in text
    assert "after encoder.layer.{0..11}.output.dense and its dropout (encoder.layer.{0..11}.output.dropout)" in text
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


def _iaa_l_aside_share(out: str) -> tuple[int, int, float]:
    """(r, ar, aside share of the method's own parameters) of an IAA-L describe, from its sizes line (d = 768)."""
    import re

    r, ar = (int(x) for x in re.search(r"sizes +r=(\d+) ar=(\d+)", out).groups())
    bottleneck = lambda k: 2 * 768 * k + k + 768  # noqa: E731
    return r, ar, bottleneck(ar) / (2 * bottleneck(r) + bottleneck(ar))


def test_cli_describe_iaa_l_at_the_large_budget_keeps_the_papers_aside_share(
        capsys: pytest.CaptureFixture[str]) -> None:
    """The paper's 6.7 % IAA-L is r=50, ar=300: its aside modules hold 75 % of the method's parameters."""
    assert main(["tuning", "describe", "--model", "bert-base-config", "--method", "iaa-l", "--budget", "6.7%"]) == 0
    out = capsys.readouterr().out
    r, ar, aside = _iaa_l_aside_share(out)
    paper = 461_868 / 617_104  # B(300) / (2 B(50) + B(300)) = 74.8 %
    assert abs(aside - paper) < 0.10, (r, ar, aside)
    assert (r, ar) == (50, 300)
    assert "sizes chosen for 6.7 %: r=50, ar=300" in out
    assert "ar = 6 r" in out and "aside modules 74.8 % of the method's parameters" in out


def test_cli_describe_iaa_l_at_the_small_budget_keeps_the_papers_one_to_one(
        capsys: pytest.CaptureFixture[str]) -> None:
    """The paper's 0.5 % IAA-L is r=12, ar=12 (0.63 % by our count): the solver keeps ar = r and says so."""
    assert main(["tuning", "describe", "--model", "bert-base-config", "--method", "iaa-l", "--budget", "0.5%"]) == 0
    out = capsys.readouterr().out
    r, ar, aside = _iaa_l_aside_share(out)
    assert r == ar == 9 and abs(aside - 1 / 3) < 0.01
    assert "sizes chosen for 0.5 %: r=9, ar=9" in out and "ar = r" in out


BUDGET_METHODS = ("adapter", "parallel", "prefix", "lora", "mam", "iaa-s", "iaa-l", "iaa-m")


def test_cli_describe_a_random_model_folder_of_every_family(tiny, tmp_path, any_family: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`--model DIR --budget 0.5%` on a folder holding a family's config (hidden 256: at 32 no module is small
    enough for 0.5 %); describe reads the config only."""
    folder = tmp_path / any_family
    tiny.config(any_family, hidden=256, intermediate=688).save_pretrained(folder)
    for method in BUDGET_METHODS:
        rc = main(["tuning", "describe", "--model", str(folder), "--method", method, "--budget", "0.5%"])
        out, err = capsys.readouterr()
        assert rc == 0, err
        share = float(out.split(" parameters = ")[1].split(" %")[0])
        assert abs(share - 0.5) < 0.125, (method, out)
        assert f"{method}:" in out and "2 layers, hidden 256" in out
    if any_family in ("llama", "qwen2", "qwen3", "mistral"):  # pre-norm wording, grouped-query prefixes
        assert main(["tuning", "describe", "--model", str(folder), "--method", "iaa-s", "--r", "4"]) == 0
        out = capsys.readouterr().out
        assert "before the residual add" in out and "-> added after layers.{0..1}.mlp (into the residual stream)" in out
        assert main(["tuning", "describe", "--model", str(folder), "--method", "prefix", "--prefix-len", "4"]) == 0
        out = capsys.readouterr().out
        assert "key/value heads, shared by 4 query heads" in out
    assert main(["tuning", "describe", "--model", str(folder), "--method", "bitfit"]) == 0
    out = capsys.readouterr().out
    adds = any_family in ("modernbert", "llama", "qwen2", "qwen3", "mistral")  # projections without biases
    own = any_family not in ("modernbert", "llama", "qwen3", "mistral")  # biases of its own (Qwen2's q, k, v)
    assert ("added zero biases (" in out) is adds and ("bias terms (" in out) is own
    assert ("mergeable  no" in out) is (any_family in ("qwen2", "qwen3", "mistral"))  # no config switch for them


def test_cli_describe_refuses_an_unknown_architecture(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import GPT2Config

    GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=99).save_pretrained(tmp_path / "gpt2")
    assert main(["tuning", "describe", "--model", str(tmp_path / "gpt2"), "--method", "lora"]) == 2
    err = capsys.readouterr().err
    assert "model_type 'gpt2'" in err and "add an entry for it to ARCHITECTURES" in err
