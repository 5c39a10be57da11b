"""`reranker.fuse_weight`: the re-ranker fused with its first stage is a run of its own, evaluated beside the
re-ranker alone, and the one the experiment is judged by; `peft-ir rerank --fuse-weight` does the same by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from peft_ir.cli import main
from peft_ir.data import ranked, read_run
from peft_ir.errors import PeftIRError
from peft_ir.experiment import ConfigError, load_config
from peft_ir.experiment.pipeline import Pipeline
from tiny import write_yaml


def _config(beir: Path, model: Path, out: Path, **reranker: Any) -> dict[str, Any]:
    return {"name": "fz", "output": str(out), "data": {"beir": str(beir)},
            "retriever": {"model": str(model), "zero_shot": True, "normalize": True, "query_max_length": 16},
            "encode": {"batch_size": 32, "max_length": 32}, "search": {"hits": 20},
            "reranker": {"model": str(model), "zero_shot": True, "query_max_length": 8, "passage_max_length": 24,
                         "hits": 10, **reranker},
            "eval": {"measures": ["nDCG@10", "R@20"]}}


def test_fused_run_is_evaluated_beside_the_reranker_and_judged(tmp_path: Path, synthetic_beir: Path,
                                                               tiny_bert_dir: Path) -> None:
    path = write_yaml(tmp_path / "fz.yaml", _config(synthetic_beir, tiny_bert_dir, tmp_path / "runs", fuse_weight=0.5))
    pipeline = Pipeline(load_config(path), progress=False, echo=lambda _: None)
    metrics = pipeline.run()
    runs = metrics["sets"]["test"]["runs"]
    assert set(runs) == {"dense", "reranked", "reranked-fused"} and metrics["final"] == "reranked-fused"
    root = pipeline.dir.root
    dense, alone = read_run(root / "runs/test.dense.trec"), read_run(root / "runs/test.reranked.trec")
    fused = read_run(root / "runs/test.reranked-fused.trec")
    for qid, hits in fused.items():
        top = [d for d, _ in ranked(dense[qid], 10)]
        order = [d for d, _ in ranked(hits)]
        assert set(order[:10]) == set(top) and order[10:] == [d for d, _ in ranked(dense[qid])][10:]
    # the fused order is neither the re-ranker's nor the first stage's in general, and R@20 is the first stage's
    assert runs["reranked-fused"]["means"]["R@20"] == pytest.approx(runs["dense"]["means"]["R@20"])
    assert any([d for d, _ in ranked(fused[q], 10)] != [d for d, _ in ranked(alone[q], 10)] for q in fused)
    assert "| reranked-fused |" in (root / "report.md").read_text()


@pytest.mark.parametrize("weight", [0, 1, 1.5])
def test_a_weight_outside_0_1_is_refused_naming_the_key(weight: float, tmp_path: Path, synthetic_beir: Path,
                                                        tiny_bert_dir: Path) -> None:
    path = write_yaml(tmp_path / "fz.yaml", _config(synthetic_beir, tiny_bert_dir, tmp_path / "runs",
                                                    fuse_weight=weight))
    with pytest.raises(ConfigError, match=r"fz\.yaml:\d+: 'reranker\.fuse_weight': must lie strictly between 0"):
        load_config(path)


def test_cli_rerank_writes_the_fused_run_too(tmp_path: Path, synthetic_beir: Path, synthetic_runs: dict,
                                             tiny_bert_dir: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["rerank", "--run", str(synthetic_runs["test"]), "--topics", str(synthetic_beir), "--corpus",
            str(synthetic_beir), "--model", str(tiny_bert_dir), "--hits", "5", "--output", str(tmp_path / "r.trec")]
    assert main([*base, "--fuse-weight", "0.5"]) == 2
    assert "--fuse-weight and --fused-output go together" in capsys.readouterr().err
    assert main([*base, "--fuse-weight", "0.3", "--fused-output", str(tmp_path / "f.trec"), "--keep-rest"]) == 0
    first, fused = read_run(synthetic_runs["test"]), read_run(tmp_path / "f.trec")
    assert set(fused) == set(read_run(tmp_path / "r.trec"))
    for qid, hits in fused.items():
        assert set(hits) == set(first[qid])  # every first-stage hit kept, the top 5 re-ordered


# -- fuse_weight: auto: the weight chosen on the re-ranker's dev queries ---------------------------------------------
def _auto(beir: Path, model: Path, out: Path, name: str, **extra: Any) -> dict[str, Any]:
    cfg = _config(beir, model, out, fuse_weight="auto", dev_queries=12)
    return {**cfg, "name": name, **extra}


@pytest.fixture(scope="module")
def auto_runs(tmp_path_factory: pytest.TempPathFactory, synthetic_beir: Path, tiny_bert_dir: Path) -> dict[str, Any]:
    """Two finished zero-shot runs with `fuse_weight: auto`: re-ranking dense + BM25 fused (the random
    cross-encoder helps nowhere on dev: weight 0) and BM25 alone (it breaks BM25's ties well enough: an inner
    weight)."""
    tmp = tmp_path_factory.mktemp("auto")
    out: dict[str, Any] = {"tmp": tmp}
    bm25 = _auto(synthetic_beir, tiny_bert_dir, tmp / "runs", "bm25", first_stage="bm25")
    del bm25["retriever"]
    fused = _auto(synthetic_beir, tiny_bert_dir, tmp / "runs", "fused", fuse={"runs": ["dense", "bm25"]})
    for cfg in (fused, bm25):
        path = write_yaml(tmp / f"{cfg['name']}.yaml", cfg)
        lines: list[str] = []
        pipeline = Pipeline(load_config(path), progress=False, echo=lines.append)
        out[cfg["name"]] = {"config": path, "root": pipeline.dir.root, "metrics": pipeline.run(), "lines": lines}
    return out


def _recomputed(root: Path, first: str) -> Any:
    """The choice made again from the run folder's dev files, independently of the pipeline."""
    from peft_ir.data import load_qrels
    from peft_ir.eval.fuse_weight import choose_fuse_weight

    return choose_fuse_weight(read_run(root / f"runs/rerank-dev.{first}.trec"),
                              read_run(root / "runs/rerank-dev.reranked.trec"),
                              load_qrels(root / "rerank-dev/qrels.tsv"), "nDCG@10", hits=10)


def test_auto_weight_0_makes_the_final_run_the_first_stage(auto_runs: dict[str, Any], synthetic_beir: Path) -> None:
    from peft_ir.data import BeirDataset, load_topics
    from peft_ir.eval.fuse_weight import FIRST_STAGE_KEPT

    run = auto_runs["fused"]
    root, metrics = run["root"], run["metrics"]
    choice = metrics["fuse_weight"]
    assert choice["weight"] == 0.0 and choice == _recomputed(root, "fused").to_json()
    # the dev queries: 12 of the training split (none of the test set), judged by its qrels
    dev = load_topics(root / "rerank-dev/queries.jsonl")
    assert len(dev) == 12 and set(dev) <= set(BeirDataset(synthetic_beir, "train").queries())
    # the dev queries' first stage is the test queries': dense and BM25 runs, fused the same way
    assert all((root / f"runs/rerank-dev.{kind}.trec").is_file() for kind in ("dense", "bm25", "fused"))
    assert (root / "runs/test.reranked-fused.trec").read_bytes() == (root / "runs/test.fused.trec").read_bytes()
    runs = metrics["sets"]["test"]["runs"]
    assert runs["reranked-fused"]["per_query"] == runs["fused"]["per_query"] and metrics["final"] == "reranked-fused"
    report = (root / "report.md").read_text()
    assert FIRST_STAGE_KEPT in report and "| 0 (first stage) |" in report and "← chosen" in report
    assert "| reranked |" in report and "| fused |" in report  # test: first stage, re-ranker alone and fused
    log = (root / "log.txt").read_text()
    assert "| 1 (re-ranker alone) |" in log and FIRST_STAGE_KEPT in log


def test_auto_picks_an_inner_weight_and_fuses_the_test_set_with_it(auto_runs: dict[str, Any]) -> None:
    from peft_ir.indexing.fusion import write_fused_reranked

    run = auto_runs["bm25"]
    root, choice = run["root"], run["metrics"]["fuse_weight"]
    again = _recomputed(root, "bm25")
    assert choice == again.to_json() and 0.0 < again.weight < 1.0 and again.fused > again.first_stage
    assert again.weight == min(w for w, v in again.grid if v == max(v for _, v in again.grid))
    write_fused_reranked(root / "runs/test.bm25.trec", root / "runs/test.reranked.trec", again.weight, 10,
                         auto_runs["tmp"] / "expected.trec", tag="bm25-reranked-fused")
    assert (root / "runs/test.reranked-fused.trec").read_bytes() == (auto_runs["tmp"] / "expected.trec").read_bytes()
    report = (root / "report.md").read_text()
    assert f"re-ranker weight {again.weight:g} chosen on 12 dev queries" in report
    assert "reranked-fused against the first stage (bm25), nDCG@10" in report  # the paired test on the test set


def test_expectations_name_the_fused_run_of_an_auto_weight(auto_runs: dict[str, Any]) -> None:
    run = auto_runs["fused"]
    got = run["metrics"]["sets"]["test"]["runs"]["reranked-fused"]["means"]["nDCG@10"]
    cfg = yaml.safe_load(run["config"].read_text())
    write_yaml(run["config"], {**cfg, "expect": {"test": {"reranked-fused": {"nDCG@10": round(got, 4)}}}})
    lines: list[str] = []
    Pipeline(load_config(run["config"]), progress=False, echo=lines.append).run()  # resumes: nothing re-done
    assert any("expected results: all 1 reproduced" in line for line in lines)
    assert all(line.endswith("already done") for line in lines if line.startswith("["))
    write_yaml(run["config"], {**cfg, "expect": {"test": {"reranked-fused": {"nDCG@10": round(got + 0.1, 4)}}}})
    with pytest.raises(PeftIRError, match=r"test/reranked-fused nDCG@10: expected"):
        Pipeline(load_config(run["config"]), progress=False, echo=lambda _: None).run()
    write_yaml(run["config"], cfg)


@pytest.mark.parametrize(("change", "message"), [
    ({"reranker": {"dev_queries": 0}}, r"'reranker\.dev_queries': reranker\.fuse_weight: auto chooses the weight"),
    ({"first_stage": "run"}, r"'reranker\.fuse_weight': auto re-runs the first stage for the dev queries"),
    ({"data": {"train": "TRAINING_FILE"}}, r"'reranker\.fuse_weight': auto judges the dev queries held out of the "
                                           r"training split, which needs a BEIR folder"),
    ({"reranker": {"fuse_weight": "best"}}, r"'reranker\.fuse_weight': expected a number or auto or null, got .best."),
    ({"data": {"test": [{"name": "rerank-dev", "topics": "BEIR", "qrels": "BEIR"}]}},
     r"'data\.test\[0\]\.name': 'rerank-dev' names the runs of the re-ranker's dev queries"),
])
def test_auto_without_judged_dev_queries_is_refused_naming_the_key(change: dict[str, Any], message: str,
                                                                  tmp_path: Path, synthetic_beir: Path,
                                                                  synthetic_scored: Path, tiny_bert_dir: Path) -> None:
    cfg = _auto(synthetic_beir, tiny_bert_dir, tmp_path / "runs", "bad")
    for key, value in change.items():
        value = yaml.safe_load(yaml.safe_dump(value).replace("TRAINING_FILE", str(synthetic_scored))
                               .replace("BEIR", str(synthetic_beir)))
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    if cfg.get("first_stage") == "run":  # a given run file for the test set, no retriever
        cfg["data"] = {**cfg["data"], "test": [{"name": "test", "topics": str(synthetic_beir),
                                                "qrels": str(synthetic_beir), "run": str(synthetic_beir)}]}
        del cfg["retriever"]
    with pytest.raises(ConfigError, match=rf"bad\.yaml:\d+: {message}"):
        load_config(write_yaml(tmp_path / "bad.yaml", cfg))


def test_a_trained_pipeline_chooses_on_the_rerankers_own_dev_queries_and_resumes(tmp_path: Path, synthetic_beir: Path,
                                                                                 tiny_bert_dir: Path) -> None:
    """The tiny experiment (trained retriever and re-ranker) with `fuse_weight: auto`: the dev queries are exactly
    those the re-ranker's training held out; losing the choice and the dev re-ranked run reuses the score cache."""
    import json
    import re

    from peft_ir.data import load_topics
    from peft_ir.eval.fuse_weight import GRID
    from peft_ir.reranker.config import RerankerTrainConfig
    from peft_ir.reranker.training import RerankerTask
    from tiny import tiny_config

    path = write_yaml(tmp_path / "tiny.yaml", tiny_config(synthetic_beir, tiny_bert_dir, tmp_path / "runs",
                                                          reranker={"fuse_weight": "auto"}))
    pipeline = Pipeline(load_config(path), progress=False, echo=lambda _: None)
    metrics = pipeline.run()
    root = pipeline.dir.root
    task = RerankerTask(pipeline._train_config(RerankerTrainConfig, pipeline.cfg.reranker, root / "reranker"))
    task.load_data()  # the split the training made, made again by the training's own code
    dev = load_topics(root / "rerank-dev/queries.jsonl")
    summary = json.loads((root / "reranker/summary.json").read_text())
    assert dev == task.dev.queries and len(dev) == summary["dev_queries"] and summary["dev_seed"] == 7
    assert metrics["fuse_weight"]["weight"] in GRID and metrics["fuse_weight"]["queries"] == 8
    assert "## Fusion weight chosen on dev (8 dev queries, nDCG@10)" in (root / "report.md").read_text()

    final, choice = (root / "runs/test.reranked-fused.trec").read_bytes(), (root / "fuse-weight.json").read_bytes()
    for lost in ("fuse-weight.json", "runs/test.reranked-fused.trec", "metrics.json", "report.md",
                 "runs/rerank-dev.reranked.trec"):
        (root / lost).unlink()
    lines: list[str] = []
    Pipeline(load_config(path), progress=False, echo=lines.append).run()
    assert any(line.endswith("first stage of the dev queries: already done") for line in lines)
    cached = [m for line in lines if (m := re.fullmatch(r" +rerank-dev: (\d+) pairs of 8 queries \((\d+) from the "
                                                          r"score cache\)", line))]
    assert cached and cached[0][1] == cached[0][2] != "0", lines  # every dev pair from the cache, none scored again
    assert (root / "fuse-weight.json").read_bytes() == choice
    assert (root / "runs/test.reranked-fused.trec").read_bytes() == final


def test_cli_rerank_chooses_the_weight_on_dev_queries(tmp_path: Path, synthetic_beir: Path, synthetic_runs: dict,
                                                      tiny_bert_dir: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    from peft_ir.indexing.fusion import write_fused_reranked

    base = ["rerank", "--run", str(synthetic_runs["test"]), "--topics", str(synthetic_beir), "--corpus",
            str(synthetic_beir), "--model", str(tiny_bert_dir), "--hits", "5", "--keep-rest",
            "--output", str(tmp_path / "r.trec"), "--fused-output", str(tmp_path / "f.trec")]
    dev = ["--dev-run", str(synthetic_runs["train"]), "--dev-topics", str(synthetic_beir), "--dev-qrels",
           str(synthetic_beir), "--dev-split", "train"]
    # refused before any model loads: auto without its dev inputs, dev inputs without auto, a missing file
    assert main([*base, "--fuse-weight", "auto", "--dev-run", str(synthetic_runs["train"])]) == 2
    assert "give --dev-topics, --dev-qrels" in capsys.readouterr().err
    assert main([*base, "--fuse-weight", "0.5", *dev]) == 2
    assert "serve --fuse-weight auto only" in capsys.readouterr().err
    assert main([*base, "--fuse-weight", "auto", *dev[:1], str(tmp_path / "none.trec"), *dev[2:]]) == 2
    assert "--dev-run" in capsys.readouterr().err and not (tmp_path / "r.trec").exists()
    # dev queries that are the test queries: the weight would be chosen on what it is judged on
    on_test = ["--dev-run", str(synthetic_runs["test"]), "--dev-topics", str(synthetic_beir), "--dev-qrels",
               str(synthetic_beir), "--dev-split", "test"]
    assert main([*base, "--fuse-weight", "auto", *on_test]) == 2
    assert "--dev-topics shares 10 of its 10 queries with --topics" in capsys.readouterr().err

    assert main([*base, "--fuse-weight", "auto", *dev, "--dev-measure", "RR@10"]) == 0
    printed = capsys.readouterr().out
    choice = json.loads((tmp_path / "f.trec.fuse-weight.json").read_text())
    assert choice["measure"] == "RR@10" and choice["queries"] == 40 and "| re-ranker weight | dev RR@10 |" in printed
    assert f"re-ranker weight {choice['weight']:g}" in printed and (tmp_path / "r.dev.trec").is_file()
    write_fused_reranked(synthetic_runs["test"], tmp_path / "r.trec", choice["weight"], 5, tmp_path / "x.trec",
                         tag="peft-ir-rerank-fused")
    assert (tmp_path / "f.trec").read_bytes() == (tmp_path / "x.trec").read_bytes()
    # a rerun scores nothing again: the dev run's score cache sits beside it
    assert main([*base, "--fuse-weight", "auto", *dev, "--dev-measure", "RR@10"]) == 0
    assert "(200 from the cache)" in capsys.readouterr().out


@pytest.mark.parametrize("retriever", [{"dev_seed": 8}, {"dev_queries": 2}])  # the config's seed is 7
def test_auto_with_a_trained_retriever_needs_dev_queries_it_did_not_train_on(retriever: dict[str, Any],
                                                                              tmp_path: Path, synthetic_beir: Path,
                                                                              tiny_bert_dir: Path) -> None:
    # the weight is chosen on the re-ranker's dev queries searched by the trained retriever: another dev split (or
    # a smaller one) would search queries the retriever trained on, flattering the first stage
    from tiny import tiny_config

    base = tiny_config(synthetic_beir, tiny_bert_dir, tmp_path / "runs", reranker={"fuse_weight": "auto"})
    ok = load_config(write_yaml(tmp_path / "ok.yaml", base), check_files=False)
    assert ok.retriever.dev_queries >= ok.reranker.dev_queries and not ok.retriever.zero_shot
    bad = {**base, "retriever": {**base["retriever"], **retriever}}
    with pytest.raises(ConfigError, match=r"'reranker\.fuse_weight': auto searches the re-ranker's dev queries with "
                                          r"the trained retriever"):
        load_config(write_yaml(tmp_path / "bad.yaml", bad), check_files=False)
