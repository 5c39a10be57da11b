"""TREC formats: topics (qid<TAB>text), qrels (qid 0 docid grade), runs (qid Q0 docid rank score tag)."""

from __future__ import annotations

from pathlib import Path

from peft_ir.atomic import atomic_open
from peft_ir.data.textfile import iter_tsv, parse_float, parse_int
from peft_ir.errors import InputError

Run = dict[str, dict[str, float]]    # qid -> docid -> score: the one spelling of a run across peft-ir
Qrels = dict[str, dict[str, int]]    # qid -> docid -> relevance grade


def read_topics(path: str | Path) -> dict[str, str]:
    """Read `qid<TAB>text` topics (MS MARCO queries, TREC DL tsv); duplicate ids and empty text fail."""
    topics: dict[str, str] = {}
    for lineno, fields in iter_tsv(path, ("qid", "text")):
        qid, text = fields[0].strip(), "\t".join(fields[1:]).strip()
        if not text:
            raise InputError(path, lineno, "text", "empty query text")
        if qid in topics:
            raise InputError(path, lineno, "qid", f"duplicate query id {qid!r}")
        topics[qid] = text
    return topics


def write_topics(topics: dict[str, str], path: str | Path) -> None:
    with atomic_open(path) as fh:
        for qid, text in topics.items():
            fh.write(f"{qid}\t{' '.join(text.split())}\n")


def read_trec_qrels(path: str | Path) -> Qrels:
    """Read TREC qrels (whitespace-separated `qid iter docid grade`)."""
    qrels: Qrels = {}
    for lineno, fields in iter_tsv(path, ("qid", "iter", "docid", "relevance"), sep=None):
        if len(fields) != 4:
            raise InputError(path, lineno, None, f"expected 4 fields (qid iter docid relevance), got {len(fields)}")
        qid, _, docid, grade = fields
        if docid in qrels.get(qid, {}):
            raise InputError(path, lineno, "docid", f"duplicate judgement for ({qid!r}, {docid!r})")
        qrels.setdefault(qid, {})[docid] = parse_int(grade, path, lineno, "relevance")
    return qrels


def write_trec_qrels(qrels: Qrels, path: str | Path) -> None:
    with atomic_open(path) as fh:
        for qid, docs in qrels.items():
            for docid, grade in docs.items():
                fh.write(f"{qid} 0 {docid} {grade}\n")


def read_run(path: str | Path) -> Run:
    """Read a 6-column TREC run into {qid: {docid: score}}; a repeated (qid, docid) fails."""
    run: Run = {}
    for lineno, fields in iter_tsv(path, ("qid", "Q0", "docid", "rank", "score", "tag"), sep=None):
        if len(fields) != 6:
            raise InputError(path, lineno, None, f"expected 6 fields (qid Q0 docid rank score tag), got {len(fields)}")
        qid, _, docid, rank, score, _ = fields
        parse_int(rank, path, lineno, "rank")
        value = parse_float(score, path, lineno, "score")
        hits = run.setdefault(qid, {})
        if docid in hits:
            raise InputError(path, lineno, "docid", f"duplicate document {docid!r} for query {qid!r}")
        hits[docid] = value
    return run


def ranked(hits: dict[str, float], k: int | None = None) -> list[tuple[str, float]]:
    """Hits in trec_eval's order: score descending, equal scores by docid descending (trec_eval's comp_sim_docno),
    so that a cut at k, a written rank column and evaluation all see the same order."""
    order = sorted(hits.items(), key=lambda item: (item[1], item[0]), reverse=True)
    return order if k is None else order[:k]


def write_run(run: Run, path: str | Path, tag: str = "peft-ir", hits: int | None = None) -> None:
    """Write a TREC run in `ranked` order (score desc, docid desc, as trec_eval reads it); queries in input order."""
    with atomic_open(path) as fh:
        for qid, docs in run.items():
            for rank, (docid, score) in enumerate(ranked(docs, hits), start=1):
                fh.write(f"{qid} Q0 {docid} {rank} {float(score)!r} {tag}\n")  # shortest exact repr: no ties by rounding


def append_rest(head: dict[str, float], first_stage: list[tuple[str, float]]) -> dict[str, float]:
    """One query's re-ranked (or re-scored) hits, then its other first-stage hits in their first-stage order, scored
    below every re-ranked one: measures deeper than the re-ranked depth stay comparable with the first stage."""
    rest = [d for d, _ in first_stage if d not in head]
    floor = min(head.values(), default=0.0)
    return head | {d: floor - 1.0 - i for i, d in enumerate(rest)}
