"""`peft-ir report`: grouping by method, mean ± std over seeds, significance marks, convergence, figures."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from peft_ir.cli import main
from peft_ir.errors import PeftIRError
from peft_ir.experiment import load_config
from peft_ir.experiment.pipeline import Pipeline
from peft_ir.experiment.report import build_report
from tiny import tiny_config, write_yaml

QIDS = [f"q{i}" for i in range(40)]


def fake_run(root: Path, *, method: str | None, budget: str | None = None, seed: int = 1, level: float,
             dev: list[float] | None = None, share: float = 0.005, dev_seed: int | None = None,
             kept: str | None = None) -> Path:
    """A finished retrieval run folder with chosen per-query nDCG@10 values and dev curve."""
    rng = random.Random(f"{method}{seed}")
    per_query = {q: min(1.0, max(0.0, level + rng.uniform(-0.05, 0.05))) for q in QIDS}
    section = {"zero_shot": True} if method is None else {"method": method, "budget": budget, "tuning": {}}
    root.mkdir(parents=True)
    (root / "config.resolved.yaml").write_text(yaml.safe_dump({"name": root.name, "seed": seed,
                                                               "first_stage": "dense", "retriever": section,
                                                               "reranker": None}))
    means = {"nDCG@10": sum(per_query.values()) / len(QIDS)}
    (root / "metrics.json").write_text(json.dumps({"name": root.name, "final": "dense", "sets": {"test": {
        "measures": ["nDCG@10"], "runs": {"dense": {"means": means, "per_query": {"nDCG@10": per_query}}}}}}))
    if method is not None:
        (root / "retriever").mkdir()
        (root / "retriever" / "summary.json").write_text(json.dumps({
            "method": method, "share": share, "trainable": 1, "total": 1, "steps": 20, "best_dev": max(dev or [0]),
            "dev_metric": "eval_dev_ndcg@10", "wall_seconds": 10.0 * seed}
            | ({} if dev_seed is None else {"dev_seed": dev_seed}) | ({} if kept is None else {"kept": kept})))
        rows = [{"step": 10 * i, "eval_dev_ndcg@10": v} for i, v in enumerate(dev or [])]
        rows += [{"step": 10 * i + 5, "loss": 1.0 / (i + 1)} for i in range(len(dev or []))]
        (root / "retriever" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture
def fake_runs(tmp_path: Path) -> list[Path]:
    return [
        fake_run(tmp_path / "full", method="full", level=0.80, dev=[0.5, 0.7, 0.8], share=1.0),
        fake_run(tmp_path / "iaa-l-s1", method="iaa-l", budget="0.5%", seed=1, level=0.80, dev=[0.5, 0.76, 0.8]),
        fake_run(tmp_path / "iaa-l-s2", method="iaa-l", budget="0.5%", seed=2, level=0.79, dev=[0.5, 0.6, 0.8]),
        fake_run(tmp_path / "lora", method="lora", budget="0.5%", level=0.50, dev=[0.5, 0.6, 0.7]),
        fake_run(tmp_path / "zero-shot", method=None, level=0.45),
    ]


def _row(text: str, label: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_table_groups_seeds_marks_significance_and_convergence(fake_runs: list[Path], tmp_path: Path) -> None:
    text = build_report(fake_runs, tmp_path / "report")
    assert (tmp_path / "report" / "report.md").read_text() == text
    heads = _row(text, "method")
    col = heads.index("nDCG@10")
    iaa = _row(text, "iaa-l 0.5%")
    assert iaa[1] == "2 (seed 1, 2)"
    s1 = json.loads((fake_runs[1] / "metrics.json").read_text())["sets"]["test"]["runs"]["dense"]["means"]["nDCG@10"]
    s2 = json.loads((fake_runs[2] / "metrics.json").read_text())["sets"]["test"]["runs"]["dense"]["means"]["nDCG@10"]
    import statistics
    assert iaa[col].startswith(f"{(s1 + s2) / 2:.4f} ± {statistics.stdev([s1, s2]):.4f}")
    lora, zero, full = _row(text, "lora 0.5%"), _row(text, "zero-shot"), _row(text, "full")
    # lora (0.50): far below full FT and below the best other method (iaa-l), above the untrained model (0.45)
    assert lora[col].endswith("†‡§")
    # iaa-l: on a par with full FT, and the best PEFT method, significantly above the runner-up (lora), and above
    # the untrained model
    assert iaa[col].endswith("‡§") and "†" not in iaa[col]
    assert full[col].endswith("§") and "†" not in full[col]  # the baseline of † is not marked against itself
    # untrained: no share, no § against itself, and no ‡: it is §'s baseline, outside ‡'s Holm family
    assert zero[col].endswith("†") and zero[2] == ""
    assert lora[2] == "0.500%" and full[2] == "100.000%"
    # steps to 95 % of the best dev metric: iaa-l's seeds reach 0.76 at steps 10 and 20 (shown with their mean),
    # lora 0.665 only at 20
    conv = heads.index("steps to 95% of best dev")
    assert iaa[conv] == "15 (10 / 20)" and lora[conv] == "20" and full[conv] == "20"
    # iaa-l's seeds held out different dev queries: the report says its best-dev mean mixes dev splits
    assert "averages different dev splits" in text
    train = heads.index("train (s)")      # training wall time, mean over seeds (10 s x seed in the fixture)
    assert iaa[train] == "15" and full[train] == "10" and zero[train] == ""
    for png in ("curves.png", "share_vs_effectiveness.png"):
        data = (tmp_path / "report" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert f"]({png})" in text


def test_the_best_method_family_holds_the_trained_rows_only(fake_runs: list[Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # ‡'s Holm correction runs over full FT, IAA-L and LoRA (3 tests), not the zero-shot row: a fourth test would make
    # every ‡ p-value more conservative than the comparisons it actually reports
    import peft_ir.eval
    sizes: list[int] = []
    real = peft_ir.eval.holm

    def spy(p_values: list[float]) -> list[float]:
        sizes.append(len(p_values))
        return real(p_values)

    monkeypatch.setattr(peft_ir.eval, "holm", spy)
    build_report(fake_runs, tmp_path / "report")
    assert sizes and set(sizes) == {3}  # one call per measure; † and § go through compare's own reference to holm


def fake_rerank_run(root: Path, *, method: str, level: float, bm25_seed: str = "bm25", seed: int = 42,
                    fused_level: float | None = None, **settings: Any) -> Path:
    """A finished re-ranking run folder over a BM25 first stage whose per-query values come from `bm25_seed`, judged
    by its re-ranker fused with BM25 when `fused_level` is given; `settings` go into its reranker section."""
    levels = [("bm25", 0.60, bm25_seed), ("reranked", level, f"{method}{seed}{settings}")]
    if fused_level is not None:
        levels.append(("reranked-fused", fused_level, f"fused {method}{seed}{settings}"))
    pq = {kind: {q: min(1.0, max(0.0, lv + rng.uniform(-0.05, 0.05))) for q in QIDS}
          for kind, lv, rng in ((kind, lv, random.Random(tag)) for kind, lv, tag in levels)}
    root.mkdir(parents=True)
    (root / "config.resolved.yaml").write_text(yaml.safe_dump({
        "name": root.name, "seed": seed, "first_stage": "bm25", "retriever": None,
        "reranker": {"method": method, "budget": "0.5%", "tuning": {}, **settings}}))
    runs = {kind: {"file": f"runs/test.{kind}.trec", "means": {"nDCG@10": sum(v.values()) / len(QIDS)},
                   "per_query": {"nDCG@10": v}} for kind, v in pq.items()}
    final = "reranked" if fused_level is None else "reranked-fused"
    (root / "metrics.json").write_text(json.dumps({"name": root.name, "final": final, "sets": {"test": {
        "measures": ["nDCG@10"], "runs": runs}}}))
    (root / "reranker").mkdir()
    (root / "reranker" / "summary.json").write_text(json.dumps({"method": method, "share": 0.01, "steps": 20}))
    return root


def test_rerank_table_shows_the_shared_first_stage_and_marks_against_it(tmp_path: Path) -> None:
    runs = [fake_rerank_run(tmp_path / "iaa-l", method="iaa-l", level=0.80),
            fake_rerank_run(tmp_path / "lora", method="lora", level=0.45)]
    text = build_report(runs, tmp_path / "report")
    col = _row(text, "method").index("nDCG@10")
    bm25 = _row(text, "bm25 (first stage)")
    expected = json.loads((runs[0] / "metrics.json").read_text())["sets"]["test"]["runs"]["bm25"]["means"]["nDCG@10"]
    assert bm25[1] == "1" and bm25[2] == "" and bm25[col].startswith(f"{expected:.4f}")
    assert "§" not in bm25[col]                                  # not marked against itself
    assert _row(text, "iaa-l 0.5%")[col].endswith("§") and _row(text, "lora 0.5%")[col].endswith("§")
    # runs that re-ranked different first-stage runs have no common baseline: no row, no §
    other = fake_rerank_run(tmp_path / "adapter", method="adapter", level=0.80, bm25_seed="another bm25")
    text = build_report([*runs, other], tmp_path / "report2")
    assert "(first stage)" not in text and "§" not in "".join(_row(text, "iaa-l 0.5%"))


def test_fused_rerankers_get_a_second_table_of_the_reranker_alone(tmp_path: Path) -> None:
    # fused far above BM25, the re-ranker alone ranking exactly as BM25 (its values drawn from BM25's seed): only
    # the alone table can show the latter
    runs = [fake_rerank_run(tmp_path / "iaa-l", method="iaa-l", level=0.60, fused_level=0.80, bm25_seed="iaa-l42{}"),
            fake_rerank_run(tmp_path / "lora", method="lora", level=0.70, fused_level=0.75, bm25_seed="iaa-l42{}")]
    text = build_report(runs, tmp_path / "report")
    fused_part, alone_part = text.split("## Re-ranking: the re-ranker alone")
    col = _row(fused_part, "method").index("nDCG@10")

    def mean_of(kind: str) -> float:
        return json.loads((runs[0] / "metrics.json").read_text())["sets"]["test"]["runs"][kind]["means"]["nDCG@10"]

    fused, alone = _row(fused_part, "iaa-l 0.5%")[col], _row(alone_part, "iaa-l 0.5%")[col]
    # ‡ marks the two apart in each table: IAA-L ahead of LoRA fused, behind it alone; § only where BM25 differs
    assert fused == f"{mean_of('reranked-fused'):.4f}‡§" and alone == f"{mean_of('reranked'):.4f}‡"
    assert _row(alone_part, "bm25 (first stage)")[col] == f"{mean_of('bm25'):.4f}" == alone.rstrip("‡")
    assert _row(alone_part, "lora 0.5%")[col].endswith("‡§")
    # runs judged by the re-ranker alone already: one table
    plain = build_report([fake_rerank_run(tmp_path / "unfused", method="lora", level=0.7)], tmp_path / "report2")
    assert "the re-ranker alone" not in plain


def test_runs_of_one_method_that_differ_in_more_than_the_seed_are_not_averaged(tmp_path: Path) -> None:
    """Two recipes of one method and budget (here the head, and the steps) are separate rows named by what differs;
    seeds of one recipe stay one row, and a run made before a setting existed counts as having its default."""
    runs = [fake_rerank_run(tmp_path / "old", method="iaa-l", level=0.70),  # no head recorded: the classifier
            fake_rerank_run(tmp_path / "new-s1", method="iaa-l", level=0.70, seed=1, head="classifier"),
            fake_rerank_run(tmp_path / "cos", method="iaa-l", level=0.75, head="cosine"),
            fake_rerank_run(tmp_path / "cos-s1", method="iaa-l", level=0.75, seed=1, head="cosine",
                            dev_seed=42),  # seed 42's dev split, as seed 42 without a dev_seed has
            fake_rerank_run(tmp_path / "cos-600", method="iaa-l", level=0.78, head="cosine", max_steps=600)]
    text = build_report(runs, tmp_path / "report")
    assert "| iaa-l 0.5% |" not in text
    classifier = _row(text, "iaa-l 0.5% (reranker.head=classifier, reranker.max_steps=-1)")
    cosine = _row(text, "iaa-l 0.5% (reranker.head=cosine, reranker.max_steps=-1)")
    longer = _row(text, "iaa-l 0.5% (reranker.head=cosine, reranker.max_steps=600)")
    assert classifier[1] == "2 (seed 42, 1)" and cosine[1] == "2 (seed 42, 1)" and longer[1] == "1 (seed 42)"
    col = _row(text, "method").index("nDCG@10")
    alone = json.loads((runs[-1] / "metrics.json").read_text())["sets"]["test"]["runs"]["reranked"]["means"]
    assert longer[col].startswith(f"{alone['nDCG@10']:.4f}") and "±" not in longer[col]


def test_seeds_sharing_a_dev_seed_are_not_said_to_mix_dev_splits(tmp_path: Path) -> None:
    runs = [fake_run(tmp_path / f"s{seed}", method="lora", budget="0.5%", seed=seed, level=0.7, dev=[0.5, 0.7],
                     dev_seed=7) for seed in (1, 2)]
    assert "averages different dev splits" not in build_report(runs, tmp_path / "report")


def test_curves_give_each_method_one_colour_and_each_seed_a_line_style(fake_runs: list[Path]) -> None:
    from peft_ir.experiment.plots import run_styles
    from peft_ir.experiment.results import load_run

    full, iaa1, iaa2, lora = run_styles([load_run(p) for p in fake_runs[:4]])
    assert iaa1[0] == iaa2[0] and iaa1[1] != iaa2[1]          # one method, two seeds: one colour, two styles
    assert len({full[0], iaa1[0], lora[0]}) == 3              # three methods, three colours


def test_incomplete_folders_fail_or_are_skipped(fake_runs: list[Path], tmp_path: Path) -> None:
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(PeftIRError, match="unfinished is not a finished run folder"):
        build_report([*fake_runs, tmp_path / "unfinished"], tmp_path / "out")
    text = build_report([*fake_runs, tmp_path / "unfinished"], tmp_path / "out", skip_incomplete=True)
    assert "Skipped (not finished):" in text and "unfinished" in text


def test_report_over_real_tiny_runs(tiny_run: dict[str, Any], synthetic_beir: Path, tiny_bert_dir: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    tmp = tiny_run["tmp"]
    full = write_yaml(tmp / "tiny-full.yaml", tiny_config(
        synthetic_beir, tiny_bert_dir, tmp / "runs", name="tiny-full",
        reranker={"method": "full", "tuning": {}, "lr": 1e-4}))
    Pipeline(load_config(full), progress=False, echo=lambda _: None).run()
    out = tmp / "report"
    assert main(["report", str(tiny_run["root"]), str(tmp / "runs" / "tiny-full"), "--output", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "## Re-ranking" in text and "## Retrieval" not in text
    iaa, full_row = _row(text, "iaa-l r=4, ar=4"), _row(text, "full")
    assert iaa[1] == "1 (seed 7)" and full_row[2] == "100.000%"
    head = _row(text, "method").index("head (pooler)")
    summary = json.loads((tiny_run["root"] / "reranker" / "summary.json").read_text())
    assert iaa[head] == f"{summary['head_share']:.3%}" and summary["pooler_share"] == 0  # a pretrained pooler: frozen
    reported = float(iaa[_row(text, "method").index("nDCG@10")].rstrip("†‡"))
    assert reported == pytest.approx(tiny_run["metrics"]["sets"]["test"]["runs"]["reranked"]["means"]["nDCG@10"],
                                     abs=5e-5)
    assert (out / "curves.png").stat().st_size > 5000 and (out / "share_vs_effectiveness.png").is_file()
    assert "written to" in capsys.readouterr().out


def test_the_table_says_when_the_starting_model_was_kept(tmp_path: Path) -> None:
    runs = [fake_run(tmp_path / "lora", method="lora", budget="0.5%", level=0.5, dev=[0.5, 0.6], kept="starting model"),
            fake_run(tmp_path / "iaa-1", method="iaa-l", budget="0.5%", seed=1, level=0.6, dev=[0.5, 0.7],
                     kept="best checkpoint"),
            fake_run(tmp_path / "iaa-2", method="iaa-l", budget="0.5%", seed=2, level=0.6, dev=[0.5, 0.7],
                     kept="starting model"),
            fake_run(tmp_path / "old", method="adapter", budget="0.5%", level=0.6, dev=[0.5, 0.7]),  # no record
            fake_run(tmp_path / "zero-shot", method=None, level=0.45)]
    text = build_report(runs, tmp_path / "report")
    col = _row(text, "method").index("kept")
    assert _row(text, "lora 0.5%")[col] == "starting model"
    assert _row(text, "iaa-l 0.5%")[col] == "best checkpoint ×1, starting model ×1"
    assert _row(text, "adapter 0.5%")[col] == "" and _row(text, "zero-shot")[col] == ""
