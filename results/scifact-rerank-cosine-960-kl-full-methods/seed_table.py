"""The re-ranking comparison's tables from committed result folders: per seed, the re-ranker alone and fused with
its first stage against that first stage, then each method's mean ± std over its seeds and the methods against each
other on per-query values averaged over their seeds (paired t-tests, Holm over the pairs). `peft-ir report` marks
what is significant after correction; this gives the p-values the text quotes, each seed's among them.

    python seed_table.py METHOD=DIR[,DIR...] ...      (each DIR a folder holding config.resolved.yaml,
                                                       metrics.json, reranker-summary.json and timings.json)
"""

import itertools
import json
import statistics
import sys
from pathlib import Path

import yaml

from peft_ir.eval.compare import holm, paired_t_p

TEST, MEASURE, FIRST_STAGE = "test", "nDCG@10", "bm25"
KINDS = {"alone": "reranked", "fused": "reranked-fused"}


def per_query(metrics: dict, kind: str) -> dict[str, float]:
    return metrics["sets"][TEST]["runs"][kind]["per_query"][MEASURE]


def seed_row(folder: Path, base: list[float], qids: list[str]) -> tuple[str, dict[str, list[float]]]:
    """One seed's table cells after the method's label, and its per-query values by kind."""
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    summary = json.loads((folder / "reranker-summary.json").read_text(encoding="utf-8"))
    timings = json.loads((folder / "timings.json").read_text(encoding="utf-8"))
    if [per_query(metrics, FIRST_STAGE)[q] for q in qids] != base:
        raise SystemExit(f"{folder}: re-ranked a different first stage")
    values = {k: [per_query(metrics, kind)[q] for q in qids] for k, kind in KINDS.items()}
    kept = summary["best_checkpoint"].rsplit("-", 1)[-1] if summary.get("best_checkpoint") else "start"
    train = next(v for k, v in timings.items() if k.startswith("train reranker"))
    seed = yaml.safe_load((folder / "config.resolved.yaml").read_text(encoding="utf-8")).get("seed")
    row = (f"seed {seed} | {summary['start_dev']:.4f} → {summary['best_dev']:.4f} ({kept}) | "
           f"{statistics.fmean(values['alone']):.4f} | p = {paired_t_p(values['alone'], base):.2g} | "
           f"{statistics.fmean(values['fused']):.4f} ({metrics['fuse_weight']['weight']}) | "
           f"p = {paired_t_p(values['fused'], base):.2g} | {train:,.0f} |")
    return row, values


def main(specs: list[str]) -> None:
    methods = {label: [Path(p) for p in dirs.split(",")] for label, dirs in (s.split("=", 1) for s in specs)}
    first = json.loads((next(iter(methods.values()))[0] / "metrics.json").read_text(encoding="utf-8"))
    qids = sorted(per_query(first, FIRST_STAGE))
    base = [per_query(first, FIRST_STAGE)[q] for q in qids]
    print(f"SciFact {TEST}, {len(qids)} queries, {MEASURE}; first stage {statistics.fmean(base):.4f}\n")
    print("| method, seed | dev: start → best (kept step) | alone | vs first stage | fused (weight) | vs first stage "
          "| train (s) |\n|---|---|---:|---|---:|---|---:|")
    averaged: dict[str, dict[str, list[float]]] = {}
    for label, folders in methods.items():
        seeds = []
        for folder in folders:
            row, values = seed_row(folder, base, qids)
            print(f"| {label}, {row}")
            seeds.append(values)
        averaged[label] = {k: [statistics.fmean(s[k][i] for s in seeds) for i in range(len(qids))] for k in KINDS}
        if len(seeds) > 1:
            cells = []
            for k in KINDS:
                means = [statistics.fmean(s[k]) for s in seeds]
                cells.append(f"**{statistics.fmean(means):.4f} ± {statistics.stdev(means):.4f}** | "
                             f"seed-averaged p = {paired_t_p(averaged[label][k], base):.2g}")
            print(f"| {label}, mean ± std over {len(seeds)} seeds | | {cells[0]} | {cells[1]} | |")
    pairs = list(itertools.combinations(methods, 2))
    if pairs:
        print("\n| methods (seed-averaged per query) | alone: means | p (Holm) | fused: means | p (Holm) |\n"
              "|---|---|---|---|---|")
        cells = {}
        for k in KINDS:
            raw = [paired_t_p(averaged[a][k], averaged[b][k]) for a, b in pairs]
            cells[k] = [f"{statistics.fmean(averaged[a][k]):.4f} vs {statistics.fmean(averaged[b][k]):.4f} | "
                        f"{p:.2g} ({h:.2g})" for (a, b), p, h in zip(pairs, raw, holm(raw))]
        for i, (a, b) in enumerate(pairs):
            print(f"| {a} vs {b} | {cells['alone'][i]} | {cells['fused'][i]} |")


if __name__ == "__main__":
    main(sys.argv[1:])
