"""The model card of an export: the Hub's format, the numbers of the run folder's metrics.json and of summary.json, the
base's fingerprint and the commands; the folder is one `huggingface_hub.upload_folder` pushes as is; the CLI."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from export_texts import Variant

from peft_ir.cli import main
from peft_ir.export.build import export_model
from peft_ir.export.config import ExportConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiment"))  # tests/experiment/tiny.py

from tiny import tiny_config, write_yaml  # noqa: E402


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory, variant: Variant, synthetic_beir: Path,
               synthetic_runs: dict[str, Path], tiny_bert_dir: Path) -> Path:
    """A `peft-ir run` folder as the pipeline leaves it (config.resolved.yaml, retriever/, reranker/, metrics.json),
    its models standing in for the trained ones and its runs scored by the pipeline's own evaluation."""
    from peft_ir.data import read_run, write_run
    from peft_ir.experiment import load_config
    from peft_ir.experiment.evaluation import evaluate_runs
    from peft_ir.experiment.rundir import RunDir

    tmp = tmp_path_factory.mktemp("experiment")
    cfg = load_config(write_yaml(tmp / "tiny.yaml", tiny_config(synthetic_beir, tiny_bert_dir, tmp / "runs")))
    rundir = RunDir.of(cfg)
    rundir.claim(cfg)
    shutil.copytree(variant("retriever", "iaa-l", r=4, ar=4), rundir.retriever)
    shutil.copytree(variant("reranker", "lora", lora_r=4), rundir.reranker)
    dense = read_run(synthetic_runs["test"])
    write_run({q: {d: -s for d, s in hits.items()} for q, hits in dense.items()}, tmp / "reranked.trec")
    evaluate_runs(cfg, {"test": {"dense": synthetic_runs["test"], "reranked": tmp / "reranked.trec"}}, rundir)
    return rundir.root


def _card(path: Path) -> tuple[Any, str]:
    from huggingface_hub import ModelCard

    card = ModelCard.load(path / "README.md")
    return card.data, card.text


@pytest.mark.parametrize("kind, fmt, own", [("retriever", "sentence-transformers", "dense"),
                                            ("reranker", "cross-encoder", "reranked")])
def test_the_cards_numbers_are_metrics_json_s(kind: str, fmt: str, own: str, run_folder: Path,
                                             tmp_path: Path) -> None:
    out = tmp_path / "export"
    export_model(run_folder / kind, ExportConfig(format=fmt, output=str(out)), command=f"peft-ir export {kind}")
    metrics = json.loads((run_folder / "metrics.json").read_text())
    summary = json.loads((run_folder / kind / "summary.json").read_text())
    meta = json.loads((run_folder / kind / "adapter" / "tuning_config.json").read_text())
    data, text = _card(out)
    means = metrics["sets"]["test"]["runs"]
    assert means["dense"]["means"] != means["reranked"]["means"]
    # model-index: this model's own run, metrics.json's exact values
    results = {(r.task_name, r.metric_name): r.metric_value for r in data.eval_results}
    assert results == {(f"{own} run", m): v for m, v in means[own]["means"].items()}
    assert {r.dataset_name for r in data.eval_results} == {"test"} and data.model_name == f"tiny-{kind}"
    # the body's table: every run of the test set, at four decimals
    for run_kind, body in means.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {run_kind} |"))
        assert [float(x) for x in row.strip("| ").split(" | ")[1:]] == [round(v, 4) for v in body["means"].values()]
    assert data.library_name == "sentence-transformers" and data.license == "unknown"
    assert data.pipeline_tag == ("sentence-similarity" if kind == "retriever" else "text-ranking")
    assert {"peft-ir", f"peft-ir-{summary['method']}", "peft-ir-module"} <= set(data.tags)
    assert data.base_model is None  # a local folder has no Hub id (the real model's card has one: test_minilm.py)
    assert meta["base"]["sha256_sampled"] in text and f"| steps | {summary['steps']} |" in text
    assert f"{summary['trainable']:,} of {summary['total']:,}" in text and f"({summary['share']:.3%})" in text
    assert f"peft-ir export {kind}" in text and f"peft-ir train {kind} --train {summary['config']['train']}" in text
    assert "in run folder `tiny`" in text


def test_a_model_without_a_run_folder_says_it_has_no_evaluation(variant: Variant, tmp_path: Path) -> None:
    out = tmp_path / "export"
    export_model(variant("retriever", "lora", lora_r=4), ExportConfig(format="peft", output=str(out)))
    data, text = _card(out)
    assert data.eval_results is None and "No evaluation travels with this model" in text
    assert data.library_name == "peft" and "peft-adapter" in data.tags
    assert "load_adapter" in text and "PeftModel.from_pretrained" in text


def test_a_reranker_s_prefixes_are_in_its_card(variant: Variant, tmp_path: Path) -> None:
    # the exported tokenizer does not add them, and a re-ranker trained with them scores otherwise without
    from dataclasses import replace

    from peft_ir.export.source import read_trained
    from peft_ir.reranker.config import CrossEncoderSpec

    template = read_trained(variant("reranker", "lora", lora_r=4)).spec
    spec = replace(template, query_prefix="query: ", passage_prefix="document: ")
    assert isinstance(spec, CrossEncoderSpec)
    out = tmp_path / "export"
    export_model(variant("reranker", "lora", spec=spec, lora_r=4), ExportConfig(format="hf", output=str(out)))
    _, text = _card(out)
    assert "**Prefixes.**" in text and "`'query: '`" in text and "`'document: '`" in text
    plain = tmp_path / "plain"
    export_model(variant("reranker", "lora", lora_r=4), ExportConfig(format="hf", output=str(plain)))
    assert "**Prefixes.**" not in _card(plain)[1]


@pytest.mark.parametrize("fmt", ["sentence-transformers", "hf"])
def test_the_folder_is_what_upload_folder_pushes(fmt: str, variant: Variant, tmp_path: Path) -> None:
    """Plain files only (no links, no temporaries, nothing upload_folder ignores or refuses), README metadata that
    parses."""
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    out = tmp_path / "export"
    export_model(variant("retriever", "lora", lora_r=4), ExportConfig(format=fmt, output=str(out), merge=True))
    entries = list(out.rglob("*"))
    assert not [p for p in entries if p.is_symlink() or p.name.startswith(".")]
    files = sorted(p.relative_to(out).as_posix() for p in entries if p.is_file())
    assert list(filter_repo_objects(files, ignore_patterns=DEFAULT_IGNORE_PATTERNS)) == files
    for rel in files:
        CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(out / rel))
    assert "README.md" in files and _card(out)[0].tags
    assert not list(tmp_path.glob(".export*"))  # the temporary folder was renamed, not copied


def test_cli_exports_and_records_its_command(variant: Variant, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train_dir = variant("retriever", "bitfit")
    out = tmp_path / "export"
    assert main(["export", str(train_dir), "--format", "hf", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"retriever \(bitfit, merged weights\) exported as hf to .*export: 5 files", printed), printed
    assert f"peft-ir export {train_dir} --format hf --output {out}" in _card(out)[1]
    assert main(["export", str(train_dir), "--format", "hf", "--output", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
