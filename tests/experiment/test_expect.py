"""`expect:` blocks: expected results travel with their config; a run that misses one fails naming the measure,
the expected and the measured value; `peft-ir run --check-expected RUN_DIR` re-checks a finished run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from peft_ir.cli import main
from peft_ir.errors import PeftIRError
from peft_ir.experiment import ConfigError, load_config
from peft_ir.experiment.pipeline import Pipeline
from tiny import write_yaml


def _zero_shot(beir: Path, model: Path, out: Path, **extra: Any) -> dict[str, Any]:
    return {"name": "zs", "output": str(out), "data": {"beir": str(beir)},
            "retriever": {"model": str(model), "zero_shot": True, "normalize": True, "query_max_length": 16},
            "encode": {"batch_size": 32, "max_length": 32}, "search": {"hits": 20},
            "eval": {"measures": ["nDCG@10"]}, **extra}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, synthetic_beir: Path, tiny_bert_dir: Path) -> dict[str, Any]:
    """A finished zero-shot run whose config expects nothing yet, and its measured dense nDCG@10."""
    tmp = tmp_path_factory.mktemp("expect")
    path = write_yaml(tmp / "zs.yaml", _zero_shot(synthetic_beir, tiny_bert_dir, tmp / "runs"))
    pipeline = Pipeline(load_config(path), progress=False, echo=lambda _: None)
    metrics = pipeline.run()
    return {"tmp": tmp, "root": pipeline.dir.root, "got": metrics["sets"]["test"]["runs"]["dense"]["means"]["nDCG@10"],
            "beir": synthetic_beir, "model": tiny_bert_dir}


def _config(finished: dict[str, Any], expect: dict[str, Any], **extra: Any) -> Path:
    data = _zero_shot(finished["beir"], finished["model"], finished["tmp"] / "runs", expect=expect, **extra)
    return write_yaml(finished["tmp"] / "zs.yaml", data)


def test_matching_expectations_pass_and_an_unlisted_measure_is_evaluated(finished: dict[str, Any]) -> None:
    """Adding an expect block to a finished run's config resumes it (expectations judge, never shape, outputs);
    a measure the evaluation did not list (P@5) is evaluated because it is expected."""
    path = _config(finished, {"test": {"dense": {"nDCG@10": round(finished["got"], 4), "P@5": 0.0}}},
                   expect_tolerance=1.0 - 1e-9)
    (finished["root"] / "metrics.json").unlink()  # re-evaluate, so that P@5 is computed
    lines: list[str] = []
    metrics = Pipeline(load_config(path), progress=False, echo=lines.append).run()
    assert "P@5" in metrics["sets"]["test"]["runs"]["dense"]["means"]
    assert any("expected results: all 2 reproduced" in line for line in lines), lines
    saved = yaml.safe_load((finished["root"] / "config.resolved.yaml").read_text())
    assert saved["expect"]["test"]["dense"]["P@5"] == 0.0  # the run folder now carries the expectations


def test_a_miss_fails_the_run_naming_measure_expected_and_got(finished: dict[str, Any]) -> None:
    wrong = round(finished["got"] + 0.05, 4)
    path = _config(finished, {"test": {"dense": {"nDCG@10": wrong}}})
    with pytest.raises(PeftIRError, match=rf"1 of 1 expected.*test/dense nDCG@10: expected {wrong:.4f}, "
                                          rf"got {finished['got']:.4f}"):
        Pipeline(load_config(path), progress=False, echo=lambda _: None).run()
    assert (finished["root"] / "metrics.json").is_file()  # the measured numbers are kept for inspection


def test_check_expected_rechecks_a_finished_run(finished: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    good = _config(finished, {"test": {"dense": {"nDCG@10": round(finished["got"], 4)}}})
    assert main(["run", "--check-expected", str(finished["root"]), str(good)]) == 0
    assert "1 expected result(s) reproduced" in capsys.readouterr().out
    bad = _config(finished, {"test": {"dense": {"nDCG@10": 0.0 if finished["got"] > 0.5 else 1.0}}})
    assert main(["run", "--check-expected", str(finished["root"]), str(bad)]) == 2
    assert "test/dense nDCG@10: expected" in capsys.readouterr().err


@pytest.mark.parametrize("expect, message", [
    ({"dev": {"dense": {"nDCG@10": 0.5}}}, r"'expect\.dev': no test set is named 'dev' \(test sets: test\)"),
    ({"test": {"reranked": {"nDCG@10": 0.5}}}, r"'expect\.test\.reranked': this config produces no 'reranked' run"),
    ({"test": {"dense": {"nDCG@1O": 0.5}}}, r"'expect\.test\.dense\.nDCG@1O'"),
    ({"test": {"dense": {"nDCG@10": "high"}}}, r"'expect\.test\.dense\.nDCG@10': expected a number, got 'high'"),
])
def test_bad_expectations_are_refused_before_any_work(tmp_path: Path, synthetic_beir: Path, tiny_bert_dir: Path,
                                                       expect: dict[str, Any], message: str) -> None:
    path = write_yaml(tmp_path / "zs.yaml", _zero_shot(synthetic_beir, tiny_bert_dir, tmp_path / "runs",
                                                       expect=expect))
    with pytest.raises(ConfigError, match=rf"zs\.yaml:\d+: {message}"):
        load_config(path)
    assert not (tmp_path / "runs").exists()


def test_a_set_that_changes_the_experiment_drops_its_expectations(tmp_path: Path, synthetic_beir: Path,
                                                                   tiny_bert_dir: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """The block holds the numbers of the config as written: `--set seed=1` would fail them after the compute, so
    it drops them with a warning; `--set output/name` keeps them; `expect: null` in an extending file drops them, and
    so does an extending file that changes the experiment."""
    block = {"test": {"dense": {"nDCG@10": 0.5}}}
    base = write_yaml(tmp_path / "base.yaml", _zero_shot(synthetic_beir, tiny_bert_dir, tmp_path / "runs",
                                                         expect=block))
    assert load_config(base, ["output=elsewhere", "name=x"]).expect == block
    with caplog.at_level("WARNING"):
        assert load_config(base, ["seed=1", "search.hits=10"]).expect == {}
    assert "--set seed, search.hits changes what the config computes" in caplog.text
    own = {"test": {"dense": {"nDCG@10": 0.25}}}
    assert load_config(base, ["seed=1", "expect.test.dense.nDCG@10=0.25"]).expect == own  # numbers of one's own
    extending = tmp_path / "extending.yaml"
    extending.write_text("extends: base.yaml\nexpect: null\n")
    assert load_config(extending).expect == {}
    # a file that extends the config and changes what it computes does not inherit its numbers (as a --set)
    extending.write_text("extends: base.yaml\nseed: 7\nsearch: {hits: 10}\n")
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert load_config(extending).expect == {}
    assert "extending.yaml changes what base.yaml computes (seed, search)" in caplog.text
    extending.write_text("extends: base.yaml\nname: renamed\noutput: elsewhere\n")  # where and what it is called
    assert load_config(extending).expect == block
    extending.write_text("extends: base.yaml\nseed: 7\nexpect: {test: {dense: {nDCG@10: 0.25}}}\n")
    assert load_config(extending).expect == own
