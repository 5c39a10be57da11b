"""`peft-ir report`: the paper-style table over several run folders, with significance, curves and convergence.

Runs are grouped by task (retrieval or re-ranking) and method label (method + budget); runs of one group that
differ only in seed give mean ± std, and their per-query values are averaged before the paired t-tests.
† marks a Holm-corrected paired t-test against full fine-tuning (when a `full` run is present); ‡ against the best
other trained PEFT method of the same task (for the best method: the runner-up), Holm-corrected across the trained
methods (PEFT and full fine-tuning; an untrained row is §'s baseline, not one of ‡'s comparisons);
§ against the untrained baseline: the zero-shot model, or for re-ranking the first-stage run that every run re-ranked
(a BM25 run, say), which the table then shows as its own row.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

from peft_ir.atomic import atomic_open
from peft_ir.errors import PeftIRError
from peft_ir.experiment.config import RERANKED
from peft_ir.experiment.plots import plot_learning_curves, plot_share_vs_effectiveness
from peft_ir.experiment.results import (
    CONVERGED, FIRST_STAGE, ZERO_SHOT, Group, RunResult, first_stage_baseline, group_runs, load_run, tell_apart,
)

FULL = "full"


def shared_columns(runs: list[RunResult]) -> list[tuple[str, str]]:
    """(test set, measure) pairs that every run's judged run was scored on, in the first run's order."""
    first = runs[0].metrics["sets"]
    cols = [(s, m) for s, body in first.items() for m in body["measures"]]
    return [(s, m) for s, m in cols if all(s in r.metrics["sets"] and m in r.metrics["sets"][s]["measures"]
                                           for r in runs)]


def significance(groups: list[Group], columns: list[tuple[str, str]], alpha: float
                 ) -> dict[str, set[tuple[str, str, str]]]:
    """(label, test set, measure) cells per mark: † differs from full FT, ‡ from the best other PEFT method,
    § from the untrained baseline (zero-shot, or the re-ranked first stage); paired t-tests on per-query values,
    Holm-corrected across the methods compared."""
    from peft_ir.eval import compare, holm  # noqa: PLC0415

    marks: dict[str, set[tuple[str, str, str]]] = {"†": set(), "‡": set(), "§": set()}
    sets = list(dict.fromkeys(s for s, _ in columns))
    for test_set in sets:
        measures = [m for s, m in columns if s == test_set]
        pq = {g.label: g.per_query(test_set, measures) for g in groups}
        for mark, methods in (("†", {FULL}), ("§", {ZERO_SHOT, FIRST_STAGE})):
            base = next((g for g in groups if g.method in methods), None)
            if base is None or len(groups) < 2:
                continue
            others = [g.label for g in groups if g is not base]
            cmp = compare({base.label: pq[base.label], **{label: pq[label] for label in others}}, alpha)
            marks[mark] |= {(label, test_set, m) for label in others for m in measures if cmp.significant(label, m)}
        trained = [g for g in groups if g.runs[0].summary]  # not the untrained baselines, which § compares with
        peft = [g for g in trained if g.method != FULL]
        for m in measures:
            tested, raw = [], []
            for g in trained:
                rivals = [o for o in peft if o is not g]
                if not rivals:
                    continue
                best = max(rivals, key=lambda o: statistics.fmean(o.values(test_set, m)))
                p = compare({best.label: {m: pq[best.label][m]}, g.label: {m: pq[g.label][m]}}, alpha)
                tested.append(g.label)
                raw.append(p.p_values[g.label][m])
            for label, p_adj in zip(tested, holm(raw)):
                if p_adj < alpha:
                    marks["‡"].add((label, test_set, m))
    return marks


def _cell(values: list[float], marks: str) -> str:
    if len(values) > 1:
        return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}{marks}"
    return f"{values[0]:.4f}{marks}"


def _steps_cell(steps: list[int]) -> str:
    """One run's step, or the mean with each seed's step: a mean of 0, 50 and 0 alone would read as 17."""
    if len(set(steps)) <= 1:
        return f"{steps[0]}" if steps else ""
    return f"{statistics.fmean(steps):.0f} ({' / '.join(map(str, steps))})"


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.3%}"


def _head_cell(g: Group, share: float | None, method_share: float | None) -> str:
    """A cross-encoder's head share, its pooler's part in brackets (runs from before the split show the head only)."""
    head = g.summary_mean("head_share")
    if head is None:
        head = None if share is None or method_share is None or share == method_share else share - method_share
    pooler = g.summary_mean("pooler_share")
    return "" if head is None else _share(head) + (f" ({_share(pooler)})" if pooler else "")


def task_table(groups: list[Group], columns: list[tuple[str, str]], alpha: float) -> str:
    """The markdown table of one task's groups."""
    marked = significance(groups, columns, alpha)
    many_sets = len({s for s, _ in columns}) > 1
    heads = [f"{s} {m}" if many_sets else m for s, m in columns]
    lines = ["| method | runs | trainable | method share | head (pooler) | " + " | ".join(heads)
             + f" | best dev | kept | steps to {CONVERGED:.0%} of best dev | steps | train (s) |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(heads) + "---:|---|---:|---:|---:|"]
    for g in groups:
        cells = []
        for s, m in columns:
            marks = "".join(mark for mark, hits in marked.items() if (g.label, s, m) in hits)
            cells.append(_cell(g.values(s, m), marks))
        share = g.summary_mean("share")
        method_share = g.summary_mean("method_share") if g.summary_mean("method_share") is not None else share
        conv, best_dev, steps = g.convergence(), g.summary_mean("best_dev"), g.summary_mean("steps")
        wall = g.summary_mean("wall_seconds")
        seeds = "" if g.method == FIRST_STAGE else f" (seed {', '.join(str(r.seed) for r in g.runs)})"
        lines.append(f"| {g.label} | {len(g.runs)}{seeds} | {_share(share)} | {_share(method_share)} | "
                     f"{_head_cell(g, share, method_share)} | "
                     + " | ".join(cells) + f" | {'' if best_dev is None else f'{best_dev:.4f}'} | {g.kept()} | "
                     f"{_steps_cell(conv)} | {'' if steps is None else f'{steps:.0f}'} | "
                     f"{'' if wall is None else f'{wall:.0f}'} |")
    return "\n".join(lines) + "\n"


_NOTE = ("Values are means over the judged test queries of each run's final run (mean ± std over seeds where a method "
         "has several runs). trainable: trained / base parameters (a cross-encoder's head included); method share: the "
         "method's own parameters; head (pooler): a cross-encoder's new head, with in brackets the part of it that is "
         "the pooler when the pooler trains (a pretrained pooler stays frozen). † differs from full fine-tuning, ‡ from "
         "the best other PEFT method (for the best one: from the runner-up; trained rows only), § from the untrained "
         "baseline (the zero-shot model; in re-ranking, the first stage that every run re-ranked); paired t-tests on "
         "per-query values, Holm-corrected, p < {alpha}. Best dev, steps and train (s), the training's wall time: from "
         "each run's training summary; kept: the weights each training saved (a checkpoint replaces the starting model "
         "only when it beats it on the dev queries by a one-sided paired t-test, or a margin; the starting model "
         "otherwise); steps to {converged}: the first logged step whose dev metric reaches {converged} of that run's "
         "best.")
_ALONE_NOTE = ("The same runs judged by the re-ranker's own ranking, before its fusion with the first stage (the "
               "`reranked` run of each folder); columns and marks as in the table above, tested anew on these "
               "values.")


def rerankers_alone(runs: list[RunResult]) -> list[RunResult]:
    """The re-ranking runs seen through their re-ranker alone (`reranked` as the final run), where some were judged
    by the re-ranker fused with its first stage: the fused table hides whether the re-ranker beats that first stage
    on its own. [] when no run was fused, or one lacks the re-ranker's own run on a test set."""
    if all(r.metrics["final"] == RERANKED for r in runs):
        return []
    if not all(RERANKED in body["runs"] for r in runs for body in r.metrics["sets"].values()):
        return []
    return [dataclasses.replace(r, metrics={**r.metrics, "final": RERANKED}) for r in runs]


def build_report(run_dirs: list[str | Path], output: str | Path, *, alpha: float = 0.05,
                 skip_incomplete: bool = False) -> str:
    """Write report.md, curves.png and share_vs_effectiveness.png into `output`; returns the markdown."""
    runs, skipped = [], []
    for d in run_dirs:
        try:
            runs.append(load_run(d))
        except PeftIRError:
            if not skip_incomplete:
                raise
            skipped.append(str(d))
    if not runs:
        raise PeftIRError("no finished run folder to report on")
    tell_apart(runs)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Experiment report", "",
             f"{len(runs)} run(s): " + ", ".join(f"`{r.root}`" for r in runs) + ".", ""]
    if skipped:
        lines += [f"Skipped (not finished): {', '.join(skipped)}.", ""]
    for task in dict.fromkeys(r.task for r in runs):
        task_runs = [r for r in runs if r.task == task]
        tables = [("Re-ranking" if task == "rerank" else "Retrieval", task_runs, _NOTE)]
        alone = rerankers_alone(task_runs) if task == "rerank" else []
        if alone:
            tables.append(("Re-ranking: the re-ranker alone", alone, _ALONE_NOTE))
        for title, table_runs, note in tables:
            columns = shared_columns(table_runs)
            baseline = first_stage_baseline(table_runs) if task == "rerank" else None
            groups = group_runs(([baseline] if baseline else []) + table_runs)
            lines += [f"## {title}", "", task_table(groups, columns, alpha).rstrip(), "",
                      note.format(alpha=alpha, converged=f"{CONVERGED:.0%}")
                      + (" A best dev over several seeds averages different dev splits (each seed held out its own "
                         "queries; set dev_seed to share one)." if any(g.mixes_dev_sets() for g in groups) else ""),
                      ""]
            if columns and table_runs is task_runs:
                png = out / f"share_vs_effectiveness{'' if task == runs[0].task else '-' + task}.png"
                plot_share_vs_effectiveness(groups, columns[0], png)
                lines += [f"![{columns[0][1]} against trainable share]({png.name})", ""]
    curves = out / "curves.png"
    if plot_learning_curves(runs, curves):
        lines += ["## Learning curves", "", f"![dev metric and training loss against steps]({curves.name})", ""]
    text = "\n".join(lines)
    with atomic_open(out / "report.md") as fh:
        fh.write(text)
    return text
