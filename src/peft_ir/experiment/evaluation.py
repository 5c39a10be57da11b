"""The evaluate stage: score every run an experiment produced, write metrics.json and the run's report.md.

metrics.json keeps per-query values next to the means so that `peft-ir report` can test significance across run
folders without reading the qrels or the runs again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from peft_ir.atomic import atomic_open
from peft_ir.experiment.config import AUTO, RERANKED, RERANKED_FUSED, ExperimentConfig
from peft_ir.experiment.expect import expected_measures
from peft_ir.experiment.rundir import RunDir
from peft_ir.training.checkpoints import SUMMARY_FILE


def rerank_input_kind(fused: bool, first_stage: str) -> str:
    """The run kind a re-ranker re-ranks (and an experiment without one is judged by): fused, else the first
    stage. Takes plain values so that `peft-ir report` can apply it to a resolved config read back as a dict."""
    return "fused" if fused else first_stage


def final_kind(cfg: ExperimentConfig) -> str:
    """The run an experiment is judged by: the re-ranker fused with its first stage, else re-ranked, else fused,
    else the first stage."""
    if cfg.reranker and cfg.reranker.fuse_weight is not None:
        return RERANKED_FUSED
    return RERANKED if cfg.reranker else rerank_input_kind(bool(cfg.fuse), cfg.first_stage)


def evaluate_runs(cfg: ExperimentConfig, produced: dict[str, dict[str, Path]], rundir: RunDir) -> dict[str, Any]:
    """produced: test set name -> run kind -> TREC file. Writes and returns metrics.json's content."""
    from peft_ir.data import load_qrels, qrels_source, read_run  # noqa: PLC0415
    from peft_ir.eval import aggregate, default_measures, parse_measures, per_query  # noqa: PLC0415

    sets: dict[str, Any] = {}
    for t in cfg.data.test:
        qrels = load_qrels(t.qrels, t.split)
        measures = (parse_measures(cfg.eval.measures) if cfg.eval.measures
                    else default_measures(qrels, cfg.eval.preset, source=qrels_source(t.qrels)))
        names = {str(m) for m in measures}  # an expected measure is evaluated even when the collection's set lacks it
        measures += [m for m in parse_measures(expected_measures(cfg, t.name)) if str(m) not in names]
        runs = {}
        for kind, path in produced[t.name].items():
            values = per_query(qrels, read_run(path), measures, ignore_self=cfg.eval.ignore_self)
            runs[kind] = {"file": _shown(path, rundir.root), "means": aggregate(values), "per_query": values}
        sets[t.name] = {"qrels": t.qrels, "split": t.split, "measures": [str(m) for m in measures], "runs": runs}
    metrics = {"name": cfg.name, "final": final_kind(cfg), "sets": sets}
    choice = RunDir.read_json(rundir.fuse_weight) if cfg.reranker and cfg.reranker.fuse_weight == AUTO else None
    if choice:
        metrics["fuse_weight"] = choice  # the weight chosen on dev, the grid's dev means, the t-test against stage 1
    with atomic_open(rundir.metrics) as fh:
        json.dump(metrics, fh, indent=1)
    return metrics


def across_sets(metrics: dict[str, Any]) -> tuple[str, dict[str, dict[str, float]]] | None:
    """With two or more test sets (a model judged zero-shot on several collections): the measure they share
    (nDCG@10 when every set has it) and, per run kind that every set has, its value on each set and the unweighted
    mean over the sets. None with one test set or no shared measure."""
    sets = metrics["sets"]
    if len(sets) < 2:
        return None
    first = next(iter(sets.values()))
    shared = [m for m in first["measures"] if all(m in s["measures"] for s in sets.values())]
    if not shared:
        return None
    measure = "nDCG@10" if "nDCG@10" in shared else shared[0]
    rows = {}
    for kind in first["runs"]:
        if all(kind in s["runs"] for s in sets.values()):
            values = {name: s["runs"][kind]["means"][measure] for name, s in sets.items()}
            rows[kind] = values | {f"mean of {len(values)}": sum(values.values()) / len(values)}
    return measure, rows


def training_summaries(rundir: RunDir) -> dict[str, dict[str, Any]]:
    """The summary.json of each trained model in the run folder ('retriever', 'reranker')."""
    out = {}
    for part in ("retriever", "reranker"):
        summary = RunDir.read_json(getattr(rundir, part) / SUMMARY_FILE)
        if summary:
            out[part] = summary
    return out


def write_run_report(cfg: ExperimentConfig, metrics: dict[str, Any], rundir: RunDir) -> None:
    """report.md of one run: metrics of every produced run per test set, the trained models, the stage times."""
    from peft_ir.eval import metrics_table  # noqa: PLC0415

    lines = [f"# {cfg.name}", ""]
    if cfg.description:
        lines += [cfg.description.strip(), ""]
    lines += [f"Config: `{RunDir(rundir.root).config.name}` (resolved). Judged by the `{metrics['final']}` run.", ""]
    for name, s in metrics["sets"].items():
        lines += [f"## Test set {name} ({len(next(iter(s['runs'].values()))['per_query'][s['measures'][0]])} "
                  "judged queries)", ""]
        lines.append(metrics_table({kind: r["means"] for kind, r in s["runs"].items()}).rstrip())
        lines.append("")
        if RERANKED_FUSED in s["runs"]:
            lines += [against_first_stage(s, rerank_input_kind(bool(cfg.fuse), cfg.first_stage),
                                          _main_measure(cfg, s["measures"])), ""]
    if "fuse_weight" in metrics:
        lines += fuse_weight_section(metrics["fuse_weight"])
    table = across_sets(metrics)
    if table:
        measure, rows = table
        lines += [f"## Across test sets ({measure}; the mean is unweighted over sets)", "",
                  metrics_table(rows).rstrip(), ""]
    summaries = training_summaries(rundir)
    if summaries:
        lines += ["## Trained models", "",
                  "| model | method | trainable | share | steps | best dev | start dev | kept | train s |",
                  "|---|---|---:|---:|---:|---:|---:|---|---:|"]
        for part, s in summaries.items():
            lines.append(f"| {part} | {s['method']} | {s['trainable']:,} | {s['share']:.3%} | {s['steps']} | "
                         f"{_num(s.get('best_dev'))} | {_num(s.get('start_dev'))} | {kept_cell(s)} | "
                         f"{s['wall_seconds']:.0f} |")
        lines += ["", "kept: the weights saved. A checkpoint replaces the starting model only when it beats it on the "
                  "dev queries (one-sided paired t-test at `selection_alpha`, or `selection_margin`); p is that "
                  "test's.", ""]
    timings = RunDir.read_json(rundir.timings) or {}
    if timings:
        lines += ["## Stage times (this machine; seconds)", ""]
        lines += [f"- {stage}: {seconds:.0f}" for stage, seconds in timings.items()]
        lines.append("")
    with atomic_open(rundir.report) as fh:
        fh.write("\n".join(lines))


def fuse_weight_section(choice: dict[str, Any]) -> list[str]:
    """report.md's account of `fuse_weight: auto`: the grid's dev means, the chosen weight, the plain verdict."""
    from peft_ir.eval.fuse_weight import GRID, WeightChoice  # noqa: PLC0415

    c = WeightChoice.from_json(choice)
    return [f"## Fusion weight chosen on dev ({c.queries} dev queries, {c.measure})", "",
            f"The re-ranker's weight w in w · min-max(re-ranker) + (1 − w) · min-max(first stage) was chosen from "
            f"{', '.join(f'{w:g}' for w in GRID)} by the dev mean (ties: the smaller w); the dev queries are "
            f"the re-ranker's held-out training queries, searched by the same first stage.", "",
            *c.table(), "", c.verdict(), ""]


def against_first_stage(test_set: dict[str, Any], first: str, measure: str) -> str:
    """One plain line: the fused re-ranker against the first stage it re-ranked, on this test set (paired t-test)."""
    from peft_ir.eval import compare  # noqa: PLC0415

    runs = test_set["runs"]
    base, fused = runs[first]["per_query"][measure], runs[RERANKED_FUSED]["per_query"][measure]
    p = compare({first: {measure: base}, RERANKED_FUSED: {measure: fused}}).p_values[RERANKED_FUSED][measure]
    a, b = runs[first]["means"][measure], runs[RERANKED_FUSED]["means"][measure]
    if base == fused:
        verdict = "the same on every query"
    elif b == a:
        verdict = "level with the first stage"
    else:
        verdict = f"{'above' if b > a else 'below'} the first stage, {'' if p < 0.05 else 'not '}significantly"
    return (f"{RERANKED_FUSED} against the first stage ({first}), {measure}: {b:.4f} vs {a:.4f}: {verdict} "
            f"(paired t-test p = {p:.3g}).")


def fuse_measure(cfg: ExperimentConfig) -> str:
    """The measure `fuse_weight: auto` chooses by: the collection's main one, i.e. the config's first measure, else
    nDCG@10."""
    from peft_ir.eval.fuse_weight import DEFAULT_MEASURE  # noqa: PLC0415

    return cfg.eval.measures[0] if cfg.eval.measures else DEFAULT_MEASURE


def _main_measure(cfg: ExperimentConfig, measures: list[str]) -> str:
    """`fuse_measure` as this test set evaluates it (its first measure if it lacks that one)."""
    from peft_ir.eval import parse_measures  # noqa: PLC0415

    name = str(parse_measures([fuse_measure(cfg)])[0])
    return name if name in measures else measures[0]


def _shown(path: Path, root: Path) -> str:
    """Paths inside the run folder relative to it (the folder can move); others absolute."""
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return os.path.abspath(path)


def kept_cell(summary: dict[str, Any]) -> str:
    """Which weights a training kept, with the p-value that decided it ("" for summaries from before the rule)."""
    kept = summary.get("kept")
    if kept is None:
        return ""
    p = summary.get("selection_p")
    return kept if p is None else f"{kept} (p = {p:.3g})"


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else ""
