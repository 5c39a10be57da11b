"""`peft-ir eval` and `peft-ir compare`: score TREC runs against qrels."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from peft_ir.data.trec import Qrels

FORMATS = ("markdown", "csv", "json")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--qrels", required=True, help="TREC qrels, BEIR qrels tsv, a BEIR folder (with --split) or irds:ID")
    p.add_argument("--split", default="test", help="qrels split when --qrels is a BEIR folder (default: test)")
    p.add_argument("--measures", nargs="+", metavar="M",
                   help="ir-measures names, e.g. nDCG@10 'RR(rel=2)@10' R@1000 (default: by collection kind)")
    p.add_argument("--preset", choices=("beir", "trec-dl", "msmarco"),
                   help="default measure set (default: by collection: beir for a BEIR folder or tsv; for TREC "
                        "qrels trec-dl if graded, msmarco for >=5000 binary queries, else beir; irds ids by name)")
    p.add_argument("--ignore-self", action="store_true", help="drop hits whose docid equals the qid (ArguAna)")
    p.add_argument("--format", choices=FORMATS, default="markdown")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a run against qrels")
    _common(p)
    p.add_argument("--run", required=True, help="TREC run file (6 columns; plain or gzipped)")
    p.add_argument("--per-query", action="store_true", help="also print one row per query")
    p.set_defaults(func=run_eval)

    c = sub.add_parser("compare", help="compare runs: paired t-tests against the first, Holm-corrected")
    c.add_argument("runs", nargs="+", metavar="RUN", help="TREC runs (plain or gzipped); the first is the baseline")
    _common(c)
    c.add_argument("--alpha", type=float, default=0.05)
    c.add_argument("--names", nargs="+", help="display names (default: file names)")
    c.set_defaults(func=run_compare)


def _measures(args: argparse.Namespace, qrels: Qrels) -> list:
    from peft_ir.data import qrels_source
    from peft_ir.eval import default_measures, parse_measures

    if args.measures:
        return parse_measures(args.measures)
    return default_measures(qrels, args.preset, source=qrels_source(args.qrels))


def run_eval(args: argparse.Namespace) -> int:
    from peft_ir.data import load_qrels, read_run
    from peft_ir.eval import aggregate, metrics_table, per_query

    qrels = load_qrels(args.qrels, args.split)
    measures = _measures(args, qrels)
    values = per_query(qrels, read_run(args.run), measures, ignore_self=args.ignore_self)
    rows = {Path(args.run).name: aggregate(values)}
    if args.per_query:
        for qid in sorted(next(iter(values.values()))):
            rows[qid] = {m: values[m][qid] for m in values}
    print(metrics_table(rows, args.format), end="")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from peft_ir.data import load_qrels, read_run
    from peft_ir.errors import PeftIRError
    from peft_ir.eval import compare, comparison_table, per_query

    if len(args.runs) < 2:
        raise PeftIRError("compare needs at least two runs")
    names = args.names or [Path(r).name for r in args.runs]
    if len(names) != len(args.runs) or len(set(names)) != len(names):
        raise PeftIRError("--names must give one distinct name per run")
    qrels = load_qrels(args.qrels, args.split)
    measures = _measures(args, qrels)
    per_run = {n: per_query(qrels, read_run(r), measures, ignore_self=args.ignore_self) for n, r in zip(names, args.runs)}
    print(comparison_table(compare(per_run, args.alpha), args.format), end="")
    return 0
