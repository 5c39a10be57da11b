"""Fusion of two or more runs: reciprocal rank fusion and score interpolation after per-query normalisation.

Conventions (stated once, used everywhere):

- Ranks come from the deterministic ranking of each run (`peft_ir.data.ranked`: score descending, ties by docid
  descending as in trec_eval), starting at 1.
- RRF: fused(d) = sum_i w_i / (k + rank_i(d)) over the runs that retrieved d (default w_i = 1, k = 60).
- Interpolation: fused(d) = sum_i w_i * norm_i(d), where norm_i is run i's score of d normalised over that
  query's hits in run i (min-max to [0, 1] or z-score); a document missing from run i gets contribution 0 from
  it *after* normalisation (with min-max: the same as that run's lowest-scored hit; with z-score: the same as a
  hit scoring that run's mean). Default weights: 1/n each. Min-max over hits that all score the same gives 1.0
  (they are all that run's best); z-score with zero spread gives 0.0.
- A run weighted 0 is left out whole: its documents are not candidates (with min-max they would tie with the other
  runs' lowest hits, with z-score sit at their mean, and `hits` could cut a real hit for them), so weights (1, 0)
  give back the first run's ranking and documents.
- Queries: the union over all runs, in order of first appearance (first run first).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from peft_ir.atomic import atomic_open
from peft_ir.data.trec import Run, append_rest, ranked, read_run, write_run
from peft_ir.errors import PeftIRError

Method = Literal["rrf", "interpolate"]
Norm = Literal["minmax", "zscore"]


def _check(runs: Sequence[Run], weights: Sequence[float] | None) -> list[float] | None:
    if len(runs) < 2:
        raise PeftIRError(f"fusion needs at least two runs, got {len(runs)}")
    if weights is None:
        return None
    if len(weights) != len(runs):
        raise PeftIRError(f"got {len(weights)} weight(s) for {len(runs)} runs: give one weight per run")
    if any(not math.isfinite(w) for w in weights):
        raise PeftIRError(f"weights must be finite numbers, got {list(weights)}")
    if all(w == 0 for w in weights):
        raise PeftIRError(f"every weight is 0 ({list(weights)}): a run weighted 0 takes no part, so nothing would "
                          "be fused")
    return [float(w) for w in weights]


def _weighted(runs: Sequence[Run], weights: Sequence[float]) -> list[tuple[Run, float]]:
    """The runs that take part, with their weights: a run weighted 0 adds no score and no candidate."""
    return [(run, w) for run, w in zip(runs, weights) if w != 0.0]


def _query_order(runs: Sequence[Run]) -> list[str]:
    seen: dict[str, None] = {}
    for run in runs:
        for qid in run:
            seen.setdefault(qid, None)
    return list(seen)


def _cut(scores: dict[str, float], hits: int | None) -> dict[str, float]:
    return dict(ranked(scores, hits)) if hits is not None else scores


def rrf(runs: Sequence[Run], k: float = 60.0, weights: Sequence[float] | None = None, hits: int | None = None) -> Run:
    """Reciprocal rank fusion (Cormack et al. 2009)."""
    w = _check(runs, weights) or [1.0] * len(runs)
    if k < 0:
        raise PeftIRError(f"RRF k must be >= 0, got {k}")
    fused: Run = {}
    parts = _weighted(runs, w)
    for qid in _query_order([run for run, _ in parts]):
        scores: dict[str, float] = {}
        for run, wi in parts:
            for rank, (docid, _) in enumerate(ranked(run.get(qid, {})), start=1):
                scores[docid] = scores.get(docid, 0.0) + wi / (k + rank)
        fused[qid] = _cut(scores, hits)
    return fused


def normalise(scores: dict[str, float], method: Norm) -> dict[str, float]:
    """Normalise one query's scores: min-max to [0, 1] (all equal -> 1.0) or z-score (zero spread -> 0.0)."""
    if not scores:
        return {}
    values = list(scores.values())
    if method == "minmax":
        lo, hi = min(values), max(values)
        if hi == lo:
            return {d: 1.0 for d in scores}
        return {d: (s - lo) / (hi - lo) for d, s in scores.items()}
    if method == "zscore":
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))  # population standard deviation
        if std == 0.0:
            return {d: 0.0 for d in scores}
        return {d: (s - mean) / std for d, s in scores.items()}
    raise PeftIRError(f"unknown normalisation {method!r}: use minmax or zscore")


def interpolate(runs: Sequence[Run], weights: Sequence[float] | None = None, norm: Norm = "minmax",
                hits: int | None = None) -> Run:
    """Weighted sum of per-query normalised scores; missing documents contribute 0 after normalisation."""
    w = _check(runs, weights) or [1.0 / len(runs)] * len(runs)
    fused: Run = {}
    parts = _weighted(runs, w)
    for qid in _query_order([run for run, _ in parts]):
        scores: dict[str, float] = {}
        for run, wi in parts:
            for docid, s in normalise(run.get(qid, {}), norm).items():
                scores[docid] = scores.get(docid, 0.0) + wi * s
        # documents missing from a run were given nothing by it, i.e. 0 after normalisation, as documented
        fused[qid] = _cut(scores, hits)
    return fused


def fuse(runs: Sequence[Run], method: Method = "rrf", *, k: float = 60.0, norm: Norm = "minmax",
         weights: Sequence[float] | None = None, hits: int | None = None) -> Run:
    if method == "rrf":
        return rrf(runs, k=k, weights=weights, hits=hits)
    if method == "interpolate":
        return interpolate(runs, weights=weights, norm=norm, hits=hits)
    raise PeftIRError(f"unknown fusion method {method!r}: use rrf or interpolate")


def fuse_reranked(first_stage: Run, reranked: Run, weight: float, hits: int, keep_rest: bool = True) -> Run:
    """A re-ranker fused with the first stage it re-ranked: over each query's first-stage top `hits` (the pairs the
    re-ranker scored), weight * minmax(re-ranker) + (1 - weight) * minmax(first stage), so that the first stage's
    evidence is kept rather than thrown away; with `keep_rest` the deeper first-stage hits follow in their order.
    Queries absent from `reranked` keep their first-stage ranking.

    The ends of the range are the two runs themselves, not their normalised scores (min-max could round two close
    scores into a tie and reorder them): weight 0 returns the first stage unchanged (every hit, its own scores),
    weight 1 the re-ranker's own scores over the re-ranked hits (then the rest, as `rerank --keep-rest` writes)."""
    if not 0.0 <= weight <= 1.0:
        raise PeftIRError(f"the re-ranker's fusion weight must lie between 0 (the first stage alone) and 1 "
                          f"(the re-ranker alone), got {weight}")
    if weight == 0.0:
        return {qid: dict(hits_of_query) for qid, hits_of_query in first_stage.items()}
    out: Run = {}
    for qid, hits_of_query in first_stage.items():
        top = dict(ranked(hits_of_query, hits))
        scored = {d: s for d, s in reranked.get(qid, {}).items() if d in top}
        if not scored:
            out[qid] = dict(hits_of_query)
            continue
        fused = (scored if weight == 1.0
                 else interpolate([{qid: top}, {qid: scored}], weights=[1.0 - weight, weight])[qid])
        out[qid] = append_rest(fused, ranked(hits_of_query)) if keep_rest else fused
    return out


def write_fused_reranked(first_stage: str | Path, reranked: str | Path, weight: float, hits: int, output: str | Path,
                         *, keep_rest: bool = True, tag: str = "peft-ir-fused") -> None:
    """`fuse_reranked` from run files to a run file (atomic). At weight 0 the output is a byte copy of the first
    stage's file and at weight 1 of the re-ranker's: a final run that *is* one of them reads as exactly that run."""
    if weight in (0.0, 1.0):
        source = Path(first_stage if weight == 0.0 else reranked)
        with atomic_open(output, "wb", encoding=None) as fh:
            fh.write(source.read_bytes())
        return
    fused = fuse_reranked(read_run(first_stage), read_run(reranked), weight, hits, keep_rest=keep_rest)
    write_run(fused, output, tag=tag)
