"""MS MARCO-domain training data for rerankers from `train-positives.jsonl` ({query_id, query, positive_id, positive}).

The only MS MARCO passages at hand are the judged positives, so the negatives come from BM25 over the *pool of
all those positives* (never over test passages): each query searches the pool and its negatives are its top hits
other than its own positives (a query with several judged passages has a row for each: all of them are its
positives, none a negative). (Another query's positive can be relevant to this one too; with 6,590 passages on
distinct topics such false negatives are rare.) Written as a FlagEmbedding-style training file, one line per query,
{query_id, query, pos: [texts], neg: [texts]}, that `peft-ir train reranker --train FILE` reads.

The file is shared by every run that trains on it, so `<output>.build.json` records what built it (the positives'
hash, the BM25 settings and depths): the same settings reuse it, other settings are refused rather than served
another build's negatives; the pool's index is rebuilt when the positives change.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from peft_ir.atomic import atomic_open
from peft_ir.data import Document, TrainingExample, ranked, write_training
from peft_ir.data.textfile import iter_jsonl
from peft_ir.errors import InputError, PeftIRError
from peft_ir.fingerprint import file_hash

log = logging.getLogger(__name__)

FIELDS = ("query_id", "query", "positive_id", "positive")


def read_positives(path: str | Path) -> Iterator[dict[str, str]]:
    """Rows of train-positives.jsonl; every field must be present and non-empty."""
    for lineno, row in iter_jsonl(path):
        for key in FIELDS:
            if not isinstance(row.get(key), (str, int)) or str(row.get(key)).strip() == "":
                raise InputError(path, lineno, key, "missing or empty")
        yield {k: str(row[k]) for k in FIELDS}


def build_record(output: str | Path) -> Path:
    """Where `output`'s build settings are recorded."""
    return Path(output).with_name(f"{Path(output).name}.build.json")


def build_settings(positives: str | Path, *, depth: int = 30, num_negatives: int = 30, k1: float = 0.9,
                   b: float = 0.4, max_queries: int | None = None) -> dict[str, Any]:
    """What decides a training set's content: its record, compared before one is reused."""
    return {"positives_hash": file_hash(Path(positives)), "depth": depth, "num_negatives": num_negatives, "k1": k1,
            "b": b, "max_queries": max_queries}


def _recorded(output: str | Path) -> dict[str, Any] | None:
    """The build record of `output` (its settings and "stats"), or None when the file or its record is missing."""
    record = build_record(output)
    if not (Path(output).is_file() and record.is_file()):
        return None
    return json.loads(record.read_text(encoding="utf-8"))


def training_set_is_current(output: str | Path, settings: dict[str, Any]) -> bool:
    """Whether `output` exists and was built with `settings`."""
    old = _recorded(output)
    return old is not None and {k: v for k, v in old.items() if k != "stats"} == settings


def build_training_set(positives: str | Path, index_dir: str | Path, output: str | Path, *, depth: int = 30,
                       num_negatives: int = 30, threads: int = 1, k1: float = 0.9, b: float = 0.4,
                       max_queries: int | None = None) -> dict[str, Any]:
    """Index the positive pool with BM25 (reused while the positives are unchanged), search every query, write
    `output` and its build record; an output built with the same settings is reused, one built with others refused."""
    from peft_ir.indexing.bm25 import BM25Searcher, build_index  # noqa: PLC0415

    settings = build_settings(positives, depth=depth, num_negatives=num_negatives, k1=k1, b=b, max_queries=max_queries)
    record = build_record(output)
    old = _recorded(output)
    if old is not None:
        diff = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v)
        if not diff:
            log.info("%s: built with these settings already (%s), reused", output, record)
            return old["stats"]
        raise PeftIRError(f"{output} was built with other settings ({diff}; {record}); other runs may train on it: "
                          "write this one to another file (data.train), or delete it to rebuild")
    if Path(output).is_file():
        log.warning("%s has no build record (built before records were kept): rebuilt", output)
    rows = list(read_positives(positives))
    if max_queries is not None:  # the first max_queries queries, with every row of each
        kept = set(list(dict.fromkeys(r["query_id"] for r in rows))[:max_queries])
        rows = [r for r in rows if r["query_id"] in kept]
    if not rows:
        raise InputError(positives, None, None, "no query-positive pair")
    pool: dict[str, str] = {}
    queries: dict[str, str] = {}        # query id -> text, in order of first appearance
    judged: dict[str, list[str]] = {}   # query id -> its positive ids
    for r in rows:
        pool.setdefault(r["positive_id"], r["positive"])
        queries.setdefault(r["query_id"], r["query"])
        judged.setdefault(r["query_id"], []).append(r["positive_id"])
    index_dir = Path(index_dir)
    pool_record = index_dir.with_name(f"{index_dir.name}.json")
    pool_key = {"positives_hash": settings["positives_hash"], "max_queries": max_queries}
    if index_dir.is_dir() and (not pool_record.is_file()
                               or json.loads(pool_record.read_text(encoding="utf-8")) != pool_key):
        log.info("%s: built from other positives (or unrecorded): rebuilt", index_dir)
        shutil.rmtree(index_dir)
    if not index_dir.is_dir():
        build_index((Document(d, "", t) for d, t in pool.items()), index_dir, threads=threads,
                    source=f"positive pool of {positives}")
        with atomic_open(pool_record) as fh:
            json.dump(pool_key, fh)
    searcher = BM25Searcher(index_dir, k1=k1, b=b)
    try:
        if searcher.num_docs != len(pool):
            raise PeftIRError(f"{index_dir} holds {searcher.num_docs} documents, the positive pool {len(pool)}; "
                              "delete it to rebuild")
        most = max(len(set(ids)) for ids in judged.values())  # enough hits for `depth` past the positives
        run = searcher.search(queries, hits=depth + most, threads=threads)
    finally:
        searcher.close()
    examples, empty = [], 0
    for qid, query in queries.items():
        own = list(dict.fromkeys(judged[qid]))
        negs = [d for d, _ in ranked(run.get(qid, {})) if d not in own][:num_negatives]
        empty += not negs
        examples.append(TrainingExample(query, [pool[d] for d in own], [pool[d] for d in negs], qid))
    write_training(examples, output, "flag")
    stats = {"queries": len(examples), "positives": sum(len(e.positives) for e in examples), "pool": len(pool),
             "without_negatives": empty, "negatives": sum(len(e.negatives) for e in examples),
             "index": str(index_dir), "output": str(output)}
    with atomic_open(record) as fh:
        json.dump({**settings, "stats": stats}, fh, indent=1)
    log.info("MS MARCO training set: %s", stats)
    return stats
