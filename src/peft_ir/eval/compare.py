"""Compare runs on the same queries: paired t-tests against the first run, Holm-corrected across runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from scipy import stats

from peft_ir.eval.evaluate import PerQuery, aggregate


@dataclass
class Comparison:
    names: list[str]
    measures: list[str]
    means: dict[str, dict[str, float]]                       # run -> measure -> mean
    p_values: dict[str, dict[str, float]] = field(default_factory=dict)  # run -> measure -> Holm-adjusted p
    alpha: float = 0.05

    def significant(self, run: str, measure: str) -> bool:
        p = self.p_values.get(run, {}).get(measure)
        return p is not None and p < self.alpha


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values (monotone, capped at 1)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def compare(per_run: dict[str, PerQuery], alpha: float = 0.05) -> Comparison:
    """`per_run` maps run name -> per-query values (same judged queries). The first run is the baseline."""
    names = list(per_run)
    baseline = per_run[names[0]]
    measures = list(baseline)
    result = Comparison(names, measures, {n: aggregate(v) for n, v in per_run.items()}, alpha=alpha)
    for measure in measures:
        qids = sorted(baseline[measure])
        base = [baseline[measure][q] for q in qids]
        raw = []
        for name in names[1:]:
            other = [per_run[name][measure][q] for q in qids]
            diffs = [o - b for o, b in zip(other, base)]
            p = 1.0 if all(d == diffs[0] for d in diffs) and diffs[0] == 0 else float(stats.ttest_rel(other, base).pvalue)
            raw.append(1.0 if p != p else p)  # NaN (zero variance of differences) -> not significant
        for name, p in zip(names[1:], holm(raw)):
            result.p_values.setdefault(name, {})[measure] = p
    return result
