"""Compare runs on the same queries: paired t-tests against the first run, Holm-corrected across runs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

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


def paired_t_p(a: Sequence[float], b: Sequence[float], *,
               alternative: Literal["two-sided", "greater", "less"] = "two-sided") -> float:
    """p-value of scipy's paired t-test (ttest_rel) of `a` against `b`, the same queries in the same order: 1.0 where
    the test says nothing (no difference at all, or a NaN from no variance of the differences or a single query), so
    such a pair never counts as significant. The one test of run comparison and of training's model selection."""
    diffs = [x - y for x, y in zip(a, b)]
    if all(d == 0 for d in diffs):
        return 1.0  # scipy's answer would be NaN, with warnings
    p = float(stats.ttest_rel(a, b, alternative=alternative).pvalue)
    return 1.0 if math.isnan(p) else p


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
            raw.append(paired_t_p([per_run[name][measure][q] for q in qids], base))
        for name, p in zip(names[1:], holm(raw)):
            result.p_values.setdefault(name, {})[measure] = p
    return result
