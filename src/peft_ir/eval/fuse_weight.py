"""The re-ranker's fusion weight chosen on dev queries, so that re-ranking never makes a ranking worse on them.

The weight w of `fuse_reranked` (w * min-max(re-ranker) + (1 - w) * min-max(first stage)) is tried on every point
of GRID: 0 is the first stage alone, 1 the re-ranker alone. The weight with the best mean of one measure over the
dev queries wins; a tie goes to the smaller weight (the one trusting the first stage more), so weight 0 is kept
whenever the re-ranker adds nothing on dev. The chosen fusion is then compared with the first stage on the same
queries by a paired t-test (two-sided, eval/compare.py); as the weight was picked on those queries the p-value is
optimistic: the test set is the honest judge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from peft_ir.data.trec import Qrels, Run
from peft_ir.errors import PeftIRError
from peft_ir.eval.compare import compare
from peft_ir.eval.evaluate import per_query
from peft_ir.eval.measures import parse_measures
from peft_ir.indexing.fusion import fuse_reranked

GRID: tuple[float, ...] = tuple(i / 10 for i in range(11))  # 0, 0.1, ..., 1
DEFAULT_MEASURE = "nDCG@10"
FIRST_STAGE_KEPT = "the re-ranker did not improve on the first stage on dev; the final run is the first stage"


@dataclass(frozen=True)
class WeightChoice:
    """The grid's dev means, the weight chosen and how it compares with the first stage on the dev queries."""

    measure: str
    queries: int                 # judged dev queries
    grid: list[tuple[float, float]]   # (weight, dev mean), in grid order
    weight: float
    first_stage: float           # dev mean at weight 0
    reranker: float              # dev mean at weight 1
    fused: float                 # dev mean at the chosen weight
    p_value: float               # paired t-test of the chosen fusion against the first stage (1.0 at weight 0)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "grid": [list(point) for point in self.grid]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WeightChoice:
        return cls(**{**data, "grid": [(float(w), float(v)) for w, v in data["grid"]]})

    def table(self) -> list[str]:
        """The grid as a markdown table, the chosen row marked."""
        rows = [f"| re-ranker weight | dev {self.measure} |", "|---:|---:|"]
        for w, value in self.grid:
            label = {0.0: " (first stage)", 1.0: " (re-ranker alone)"}.get(w, "")
            mark = " ← chosen" if w == self.weight else ""
            rows.append(f"| {w:g}{label} | {value:.4f}{mark} |")
        return rows

    def verdict(self) -> str:
        """One plain sentence: what was chosen and whether it beats the first stage on dev."""
        if self.weight == 0.0:
            return (f"{FIRST_STAGE_KEPT} (dev {self.measure}: first stage {self.first_stage:.4f}, re-ranker alone "
                    f"{self.reranker:.4f}, {self.queries} queries).")
        sig = "significantly" if self.p_value < 0.05 else "not significantly"
        return (f"re-ranker weight {self.weight:g} chosen on {self.queries} dev queries: {self.measure} "
                f"{self.fused:.4f} against the first stage's {self.first_stage:.4f} ({sig} better, paired t-test "
                f"p = {self.p_value:.3g}; the weight was chosen on these queries, so p is optimistic).")


def choose_fuse_weight(first_stage: Run, reranked: Run, qrels: Qrels, measure: str = DEFAULT_MEASURE, *, hits: int,
                       keep_rest: bool = True, grid: Sequence[float] = GRID, ignore_self: bool = False
                       ) -> WeightChoice:
    """Evaluate `fuse_reranked` at every weight of `grid` on the dev queries of `qrels`; the best mean of `measure`
    wins, ties going to the smaller weight. The grid must hold 0 (the first stage, the test's baseline) and 1.
    `ignore_self` judges as the test is judged where a query is also a document (ArguAna, Quora): its own hit,
    which would otherwise decide the weight, is dropped."""
    points = sorted(set(float(w) for w in grid))
    if not points or points[0] != 0.0 or points[-1] != 1.0:
        raise PeftIRError(f"the weight grid must lie in [0, 1] and hold 0 (the first stage alone) and 1 (the "
                          f"re-ranker alone), got {list(grid)}")
    (m,) = parse_measures([measure])
    name = str(m)
    values = {w: per_query(qrels, fuse_reranked(first_stage, reranked, w, hits, keep_rest=keep_rest), [m],
                           ignore_self=ignore_self)[name]
              for w in points}
    means = {w: sum(v.values()) / len(v) for w, v in values.items()}
    best = max(means.values())
    # ties, the same per-query values summed in another order included: the smaller re-ranker weight
    weight = min(w for w in points if math.isclose(means[w], best, rel_tol=1e-12, abs_tol=1e-12))
    p = 1.0 if weight == 0.0 else compare({"first": {name: values[0.0]}, "fused": {name: values[weight]}}
                                          ).p_values["fused"][name]
    return WeightChoice(measure=name, queries=len(values[0.0]), grid=[(w, means[w]) for w in points], weight=weight,
                        first_stage=means[0.0], reranker=means[1.0], fused=means[weight],
                        p_value=p)
