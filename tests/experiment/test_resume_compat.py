"""A run folder stays resumable when the config differs only where outputs cannot: expectations, tracking, and
settings added to peft-ir after the folder was written (at their defaults); anything else is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from peft_ir.errors import PeftIRError
from peft_ir.experiment import load_config, to_yaml
from peft_ir.experiment.rundir import RunDir
from tiny import tiny_config, write_yaml


@pytest.fixture
def claimed(tmp_path: Path, synthetic_beir: Path, tiny_bert_dir: Path):  # type: ignore[no-untyped-def]
    """A config and a run folder whose config.resolved.yaml is that config, edited by `old_edit`."""
    path = write_yaml(tmp_path / "tiny.yaml", tiny_config(synthetic_beir, tiny_bert_dir, tmp_path / "runs"))

    def make(old_edit, overrides=()):  # type: ignore[no-untyped-def]
        cfg = load_config(path, check_files=False)
        rundir = RunDir.of(cfg)
        rundir.root.mkdir(parents=True, exist_ok=True)
        old = yaml.safe_load(to_yaml(cfg))
        old_edit(old)
        rundir.config.write_text(yaml.safe_dump(old, sort_keys=False), encoding="utf-8")
        return rundir, load_config(path, list(overrides), check_files=False)
    return make


def test_settings_added_since_at_their_default_resume(claimed) -> None:  # type: ignore[no-untyped-def]
    def older(old):  # type: ignore[no-untyped-def]
        del old["retriever"]["report_to"], old["search"]["fp16_index"], old["index"]["nprobe"]
        del old["expect"], old["retriever"]["temperature"]
    rundir, cfg = claimed(older)
    assert rundir.claim(cfg) is True
    assert "fp16_index" in yaml.safe_load(rundir.config.read_text())["search"]  # recorded from now on


def test_tracking_and_expectations_may_change(claimed) -> None:  # type: ignore[no-untyped-def]
    rundir, cfg = claimed(lambda old: None, ["reranker.report_to=[tensorboard]", "expect_tolerance=0.01"])
    assert rundir.claim(cfg) is True


@pytest.mark.parametrize("edit, message", [
    (lambda old: old["retriever"].pop("max_steps"), r"retriever\.max_steps: None -> 4"),  # absent, but not default
    (lambda old: old["retriever"].update(max_steps=5), r"retriever\.max_steps: 5 -> 4"),
    (lambda old: old["search"].update(fp16_index=True), r"search\.fp16_index: True -> False"),
])
def test_anything_that_shapes_outputs_is_refused(claimed, edit, message) -> None:  # type: ignore[no-untyped-def]
    rundir, cfg = claimed(edit)
    with pytest.raises(PeftIRError, match=rf"different config \({message}"):
        rundir.claim(cfg)
