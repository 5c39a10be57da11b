"""Score runs against qrels with ir-measures; unanswered queries count as zero (as `trec_eval -c` does)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import ir_measures
from ir_measures import Measure

from peft_ir.data.trec import Qrels, Run, ranked
from peft_ir.errors import PeftIRError

log = logging.getLogger(__name__)

PerQuery = dict[str, dict[str, float]]  # measure name -> qid -> value


def drop_self_hits(run: Run) -> Run:
    """Remove hits whose docid equals the qid (ArguAna/Quora-style collections where a query is also a document)."""
    return {qid: {d: s for d, s in hits.items() if d != qid} for qid, hits in run.items()}


def strict_order(run: Run) -> Run:
    """Each query's hits re-scored n, n-1, ..., 1 in trec_eval's order (`ranked`: score desc, docid desc).

    ir-measures' providers break equal scores differently (the msmarco one behind RR@k by docid ascending,
    pytrec_eval by docid descending), so without this one table could score a run under two orders.
    """
    return {qid: {d: float(len(hits) - i) for i, (d, _) in enumerate(ranked(hits))} for qid, hits in run.items()}


def per_query(qrels: Qrels, run: Run, measures: Sequence[Measure], *, ignore_self: bool = False) -> PerQuery:
    """Per-query values for every judged query; a judged query missing from the run scores 0 for every measure.
    Tied scores are ranked once, in trec_eval's order, for every measure (`strict_order`)."""
    if not qrels:
        raise PeftIRError("the qrels are empty")
    if ignore_self:
        run = drop_self_hits(run)
    judged = set(qrels)
    unjudged = len(set(run) - judged)
    if unjudged:
        log.warning("%d of %d run queries are not judged in the qrels and are ignored", unjudged, len(run))
    run = strict_order({qid: hits for qid, hits in run.items() if qid in judged})
    if not run:
        raise PeftIRError("no query of the run is judged in the qrels: are the run and the qrels from the same collection?")
    values: PerQuery = {str(m): {qid: 0.0 for qid in qrels} for m in measures}
    for metric in ir_measures.iter_calc(list(measures), qrels, run):
        values[str(metric.measure)][metric.query_id] = float(metric.value)
    missing = judged - {qid for qid, hits in run.items() if hits}  # ignore_self can empty a query
    if missing:
        log.warning("%d of %d judged queries have no hits in the run; they count as 0", len(missing), len(judged))
    return values


def aggregate(values: PerQuery) -> dict[str, float]:
    return {name: sum(v.values()) / len(v) for name, v in values.items()}


def evaluate(qrels: Qrels, run: Run, measures: Sequence[Measure], *, ignore_self: bool = False) -> dict[str, float]:
    """Mean of each measure over all judged queries."""
    return aggregate(per_query(qrels, run, measures, ignore_self=ignore_self))
