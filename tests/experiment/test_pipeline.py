"""`peft-ir run` end to end on a tiny model: run folder contents, metrics, resume, refusal of a changed config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from peft_ir.cli import main
from peft_ir.data import read_run
from peft_ir.errors import PeftIRError
from peft_ir.experiment import load_config
from peft_ir.experiment.pipeline import Pipeline
from peft_ir.experiment.rundir import LOCK
from tiny import stamps, tiny_config, write_yaml


def test_run_writes_every_stage_output_and_metrics(tiny_run: dict[str, Any]) -> None:
    root, metrics = tiny_run["root"], tiny_run["metrics"]
    for rel in ("config.resolved.yaml", "log.txt", "timings.json", "metrics.json", "report.md",
                "retriever/summary.json", "retriever/adapter", "embeddings/manifest.json", "index/manifest.json",
                "runs/test.dense.trec", "runs/train.dense.trec", "reranker/summary.json", "reranker/adapter",
                "runs/test.reranked.trec"):
        assert (root / rel).exists(), rel
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name], "temporary files left behind"
    # the resolved config is what ran: absolute data paths, the beir shorthand expanded
    resolved = yaml.safe_load((root / "config.resolved.yaml").read_text())
    assert resolved["data"]["test"][0]["name"] == "test" and Path(resolved["data"]["corpus"]).is_absolute()
    # the retriever trained with the config's method and sizes, the reranker too
    for part in ("retriever", "reranker"):
        summary = json.loads((root / part / "summary.json").read_text())
        assert summary["method"] == "iaa-l" and summary["steps"] == 4
        assert summary["config"]["tuning"]["r"] == 4 and summary["config"]["seed"] == 7
        assert summary["config"]["tuning"]["seed"] == 7  # the experiment's seed initialises the added modules
    # re-ranking reordered the top `reranker.hits` (10) of the dense run; hits 11-20 follow in dense order
    dense, reranked = read_run(root / "runs/test.dense.trec"), read_run(root / "runs/test.reranked.trec")
    assert len(dense) == 10 and all(len(h) == 20 for h in dense.values())
    assert len(reranked) == 10 and all(set(h) == set(dense[q]) for q, h in reranked.items())
    for qid in reranked:
        order = sorted(dense[qid], key=lambda d: (-dense[qid][d], d))
        new = sorted(reranked[qid], key=lambda d: (-reranked[qid][d], d))
        assert set(new[:10]) == set(order[:10]) and new[10:] == order[10:]
    # metrics: both runs scored on the config's measures, per query kept, final = reranked
    assert metrics["final"] == "reranked"
    runs = metrics["sets"]["test"]["runs"]
    assert set(runs) == {"dense", "reranked"}
    for r in runs.values():
        assert set(r["means"]) == {"nDCG@10", "R@20"}
        assert len(r["per_query"]["nDCG@10"]) == 10
        assert r["means"]["nDCG@10"] == pytest.approx(sum(r["per_query"]["nDCG@10"].values()) / 10)
    assert json.loads((root / "metrics.json").read_text()) == metrics
    report = (root / "report.md").read_text()
    assert "| reranked |" in report
    # each trained model's row says which weights were kept (the starting model unless a checkpoint beat it on
    # dev), as summary.json does, and so did the progress lines
    from peft_ir.experiment.evaluation import kept_cell
    from peft_ir.training.selection import describe

    for part in ("retriever", "reranker"):
        summary = json.loads((root / part / "summary.json").read_text())
        assert summary["kept"] in ("starting model", "best checkpoint") and summary["selection_p"] is not None
        row = next(line for line in report.splitlines() if line.startswith(f"| {part} |"))
        assert f"| {kept_cell(summary)} |" in row and kept_cell(summary).startswith(summary["kept"] + " (p = ")
        assert f"    {describe(summary)}" in tiny_run["lines"]
    # progress: numbered stages, all run the first time
    started = [line for line in tiny_run["lines"] if line.startswith("[") and "done in" in line]
    assert len(started) == 7 and started[0].startswith("[1/7] train retriever") and "[7/7] evaluate" in started[-1]


def test_rerun_skips_every_finished_stage(tiny_run: dict[str, Any]) -> None:
    root = tiny_run["root"]
    before = stamps(root)
    lines: list[str] = []
    metrics = Pipeline(load_config(tiny_run["config"]), progress=False, echo=lines.append).run()
    assert stamps(root) == before  # nothing rewritten
    assert metrics == tiny_run["metrics"]
    assert sum("already done" in line for line in lines) == 7
    assert lines[0].startswith("resuming tiny")


def test_rerun_after_losing_late_outputs_redoes_only_those(tiny_run: dict[str, Any]) -> None:
    """As after a kill during re-ranking: earlier stages are kept, re-ranking reuses its score cache."""
    root = tiny_run["root"]
    before = stamps(root)
    for rel in ("runs/test.reranked.trec", "metrics.json", "report.md"):
        (root / rel).unlink()
    lines: list[str] = []
    metrics = Pipeline(load_config(tiny_run["config"]), progress=False, echo=lines.append).run()
    after = stamps(root)
    for rel in ("retriever/summary.json", "reranker/summary.json", "embeddings/manifest.json", "index/manifest.json",
                "runs/test.dense.trec"):
        assert after[rel] == before[rel], rel
    assert sum("already done" in line for line in lines) == 5
    assert any("100 pairs of 10 queries (100 from the score cache)" in line for line in lines), lines
    assert metrics["sets"] == tiny_run["metrics"]["sets"]


def test_a_second_run_on_a_folder_in_use_is_refused_and_resumes_once_free(tiny_run: dict[str, Any]) -> None:
    """Another process holds the folder (as a first `peft-ir run` of the same config does): the second refuses at
    once and writes nothing; when the holder ends, however it ends, the folder is free and the run resumes."""
    root = tiny_run["root"]
    before = stamps(root)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from filelock import FileLock; "
                               "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(120)",
                               str(root / LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(PeftIRError, match=r"in use by another `peft-ir run`"):
            Pipeline(load_config(tiny_run["config"]), progress=False, echo=lambda _: None).run()
        assert stamps(root) == before
    finally:
        holder.kill()
        holder.wait()
    lines: list[str] = []
    metrics = Pipeline(load_config(tiny_run["config"]), progress=False, echo=lines.append).run()
    assert lines[0].startswith("resuming tiny") and metrics == tiny_run["metrics"]


def test_changed_config_is_refused_naming_the_keys(tiny_run: dict[str, Any]) -> None:
    cfg = load_config(tiny_run["config"], ["retriever.max_steps=5", "reranker.hits=5"])
    before = stamps(tiny_run["root"])
    with pytest.raises(PeftIRError, match=r"different config.*retriever\.max_steps: 4 -> 5.*reranker\.hits: 10 -> 5"):
        Pipeline(cfg, progress=False, echo=lambda _: None).run()
    assert stamps(tiny_run["root"]) == before


def test_cli_check_lists_stages_and_bad_config_exits_2(tiny_run: dict[str, Any], capsys: pytest.CaptureFixture,
                                                        tmp_path: Path) -> None:
    assert main(["run", str(tiny_run["config"]), "--check"]) == 0
    out = capsys.readouterr().out
    assert "[1] train retriever: iaa-l (r=4, ar=4), 4 steps (done)" in out and "[7] evaluate (done)" in out
    assert main(["run", str(tiny_run["config"]), "--set", "retriever.max_step=5"]) == 2
    assert "did you mean 'retriever.max_steps'" in capsys.readouterr().err


def test_run_under_a_launcher_is_refused_before_any_write(tiny_run: dict[str, Any], capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(tiny_run["config"], ["name=under-torchrun"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["run", str(tiny_run["config"]), "--set", "name=under-torchrun"]) == 2
    assert "WORLD_SIZE=2" in capsys.readouterr().err
    assert not (Path(cfg.output) / "under-torchrun").exists()


def test_folder_with_foreign_files_is_refused(tmp_path: Path, synthetic_beir: Path, tiny_bert_dir: Path) -> None:
    """A folder holding someone else's embeddings: they must not pass for this run's."""
    path = write_yaml(tmp_path / "tiny.yaml", tiny_config(synthetic_beir, tiny_bert_dir, tmp_path / "runs"))
    (tmp_path / "runs" / "tiny" / "embeddings").mkdir(parents=True)
    with pytest.raises(PeftIRError, match=r"already holds files that `peft-ir run` did not write"):
        Pipeline(load_config(path), progress=False, echo=lambda _: None).run()
    assert not (tmp_path / "runs" / "tiny" / "config.resolved.yaml").exists()
