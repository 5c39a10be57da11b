"""The bad-input catalogue (issue 8): every reader against every defect, plus the documented tolerant cases.

Plain data, no pytest: `tests/reliability/test_bad_input.py` asserts each case and `bench/faults.py` counts them.
A `Rejected` case must raise InputError naming this file, line and field; a `Tolerated` one must succeed and,
where it says so, log a warning that counts what was skipped.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft_ir.data import (
    BeirDataset, iter_collection, iter_corpus, load_corpus, load_qrels, load_topics, read_queries, read_run,
    read_training,
)

BOM = b"\xef\xbb\xbf"
DOC = json.dumps({"_id": "d1", "title": "t", "text": "x"})
QUERY = json.dumps({"_id": "1", "text": "a"})


def _all(reader: Callable[[Path], Any]) -> Callable[[Path], Any]:
    """Drain a lazy reader so that errors deep in the file surface."""
    return lambda p: list(reader(p)) if not isinstance(r := reader(p), dict) else r


def _qrels(p: Path) -> Any:
    return load_qrels(p)


def _beir(files: dict[str, str | bytes], split: str = "test") -> Callable[[Path], Any]:
    """Write a BEIR folder next to `p` and load it the way training does (queries of the split, then the corpus)."""
    def read(p: Path) -> Any:
        root = p.parent / "beir"
        (root / "qrels").mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            (root / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        ds = BeirDataset(root, split)
        return ds.queries(), load_corpus(ds.corpus_path)
    return read


def _rerank_inputs(run: Path) -> Any:
    from peft_ir.reranker.rerank import load_inputs

    (run.parent / "corpus.jsonl").write_text(DOC + "\n", encoding="utf-8")
    (run.parent / "topics.tsv").write_text("1\tquery one\n", encoding="utf-8")
    return load_inputs(run, run.parent / "topics.tsv", run.parent / "corpus.jsonl", hits=10)


def _evaluate(run: Path) -> Any:
    from peft_ir.eval import evaluate, parse_measures

    (run.parent / "qrels.txt").write_text("1 0 d1 1\n2 0 d2 1\n", encoding="utf-8")
    return evaluate(load_qrels(run.parent / "qrels.txt"), read_run(run), parse_measures(["RR@10"]))


def _training_examples(qrels: Path) -> Any:
    from peft_ir.data.examples import beir_examples

    root = qrels.parent.parent
    (root / "corpus.jsonl").write_text(DOC + "\n", encoding="utf-8")
    (root / "queries.jsonl").write_text(QUERY + '\n{"_id": "2", "text": "b"}\n', encoding="utf-8")
    ds = BeirDataset(root, "train")
    return beir_examples(ds, load_corpus(ds.corpus_path))


def _annotate_inputs(run: Path) -> Any:
    """What `peft-ir annotate` checks before loading its teacher: a BEIR folder beside the run."""
    from peft_ir.teacher.annotate import build_plan
    from peft_ir.teacher.config import AnnotateConfig

    root = run.parent / "beir"
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text(DOC + "\n", encoding="utf-8")
    (root / "queries.jsonl").write_text(QUERY + "\n", encoding="utf-8")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n", encoding="utf-8")
    return build_plan(AnnotateConfig(dataset=str(root), run=str(run), depth=10, output=str(run.parent / "o.jsonl")))


@dataclass(frozen=True)
class Rejected:
    name: str
    reader: Callable[[Path], Any]
    file: str
    content: str | bytes
    line: int | None
    field: str | None
    fragment: str
    at_fault: str | None = None  # the file the error must name, relative to the input's folder (default: the input)


@dataclass(frozen=True)
class Tolerated:
    name: str
    reader: Callable[[Path], Any]
    file: str
    content: str | bytes
    expect: Callable[[Any], bool]
    warning: str | None = None  # a fragment of the counted warning that must be logged


corpus, queries, training, collection = _all(iter_corpus), _all(read_queries), _all(read_training), _all(iter_collection)

REJECTED = [
    # BEIR corpus
    Rejected("corpus: malformed JSON", corpus, "corpus.jsonl", DOC + "\n{bad json\n", 2, None, "malformed JSON"),
    Rejected("corpus: missing _id", corpus, "corpus.jsonl", DOC + '\n{"title": "t", "text": "x"}\n', 2, "_id", "missing"),
    Rejected("corpus: mistyped text", corpus, "corpus.jsonl", DOC + '\n{"_id": "d2", "text": 5}\n', 2, "text", "expected str"),
    Rejected("corpus: duplicate id", corpus, "corpus.jsonl", DOC + "\n" + DOC + "\n", 2, "_id", "duplicate"),
    Rejected("corpus: non-UTF-8 bytes", corpus, "corpus.jsonl", DOC.encode() + b'\n{"_id": "d2", "text": "\xff"}\n', 2,
             None, "UTF-8"),
    # BEIR queries
    Rejected("queries: empty text", queries, "queries.jsonl", QUERY + '\n{"_id": "2", "text": "  "}\n', 2, "text", "empty"),
    Rejected("queries: malformed JSON", queries, "queries.jsonl", QUERY + '\n{"_id": "2", "text": \n', 2, None,
             "malformed JSON"),
    Rejected("queries: missing _id", queries, "queries.jsonl", QUERY + '\n{"text": "b"}\n', 2, "_id", "missing"),
    Rejected("queries: duplicate id", queries, "queries.jsonl", QUERY + "\n" + QUERY + "\n", 2, "_id", "duplicate"),
    Rejected("queries: non-UTF-8 bytes", queries, "queries.jsonl", QUERY.encode() + b'\n{"_id": "2", "text": "\xfe"}\n',
             2, None, "UTF-8"),
    # qrels: BEIR tsv and TREC
    Rejected("BEIR qrels: mistyped score", _qrels, "qrels.tsv", "query-id\tcorpus-id\tscore\n1\td1\t1\n2\td2\tx\n", 3,
             "score", "integer"),
    Rejected("BEIR qrels: missing field", _qrels, "qrels.tsv", "query-id\tcorpus-id\tscore\n1\td1\t1\n2\td2\n", 3, "score",
             "missing"),
    Rejected("BEIR qrels: duplicate pair", _qrels, "qrels.tsv", "query-id\tcorpus-id\tscore\n1\td1\t1\n1\td1\t2\n", 3,
             "corpus-id", "duplicate"),
    Rejected("TREC qrels: missing relevance", _qrels, "qrels.txt", "1 0 d1 1\n1 0 d2\n", 2, "relevance", "missing"),
    Rejected("TREC qrels: duplicate pair", _qrels, "qrels.txt", "1 0 d1 1\n1 0 d1 2\n", 2, "docid", "duplicate"),
    Rejected("TREC qrels: extra field", _qrels, "qrels.txt", "1 0 d1 1\n1 0 d2 1 extra\n", 2, None, "expected 4 fields"),
    Rejected("TREC qrels: non-UTF-8 bytes", _qrels, "qrels.txt", b"1 0 d1 1\n1 0 d\xe92 1\n", 2, None, "UTF-8"),
    Rejected("judged query absent from queries", _beir({"corpus.jsonl": DOC + "\n", "queries.jsonl": QUERY + "\n",
                                                        "qrels/test.tsv": "query-id\tcorpus-id\tscore\n9\td1\t1\n"}),
             "marker", "", None, "query-id", "absent", at_fault="beir/qrels/test.tsv"),
    Rejected("re-ranking: run docid absent from the corpus", lambda p: _rerank_inputs(p), "run.trec",
             "1 Q0 d1 1 2.0 t\n1 Q0 d9 2 1.0 t\n", None, None, "not in this corpus", at_fault="corpus.jsonl"),
    Rejected("re-ranking: run qid absent from the topics", lambda p: _rerank_inputs(p), "run.trec",
             "1 Q0 d1 1 2.0 t\n7 Q0 d1 1 1.0 t\n", None, None, "not in these topics", at_fault="topics.tsv"),
    Rejected("annotate: run docid absent from the corpus", _annotate_inputs, "run.trec",
             "1 Q0 d1 1 2.0 t\n1 Q0 d9 2 1.0 t\n", 2, "docid", "not in the corpus"),
    Rejected("annotate: no judged query in the run", _annotate_inputs, "run.trec", "7 Q0 d1 1 2.0 t\n", None, "qid",
             "none of the 1 judged queries"),
    # TREC topics
    Rejected("topics: missing text", load_topics, "topics.tsv", "1\tquery one\n2\n", 2, "text", "missing"),
    Rejected("topics: empty text", load_topics, "topics.tsv", "1\tquery one\n2\t \n", 2, "text", "empty"),
    Rejected("topics: duplicate id", load_topics, "topics.tsv", "1\tquery one\n1\tquery two\n", 2, "qid", "duplicate"),
    Rejected("topics: non-UTF-8 bytes", load_topics, "topics.tsv", b"1\tquery one\n2\tqu\xffery\n", 2, None, "UTF-8"),
    # TREC runs
    Rejected("run: mistyped score", read_run, "run.trec", "1 Q0 d1 1 2.0 t\n1 Q0 d2 2 abc t\n", 2, "score", "number"),
    Rejected("run: duplicate (qid, docid)", read_run, "run.trec", "1 Q0 d1 1 2.0 t\n1 Q0 d1 2 1.0 t\n", 2, "docid",
             "duplicate"),
    Rejected("run: mistyped rank", read_run, "run.trec", "1 Q0 d1 1 2.0 t\n1 Q0 d2 x 1.0 t\n", 2, "rank", "integer"),
    Rejected("run: missing field", read_run, "run.trec", "1 Q0 d1 1 2.0 t\n1 Q0 d2 2 1.0\n", 2, "tag", "6 whitespace"),
    Rejected("run: non-UTF-8 bytes", read_run, "run.trec", b"1 Q0 d1 1 2.0 t\n1 Q0 d\xff 2 1.0 t\n", 2, None, "UTF-8"),
    Rejected("run: truncated gzip (the line where reading failed)", read_run, "run.trec.gz",
             gzip.compress(b"1 Q0 d1 1 2.0 t\n1 Q0 d2 2 1.0 t\n")[:-8], 3, None, "unreadable gzip"),
    Rejected("run: gzipped, a bad line inside", read_run, "run.trec.gz",
             gzip.compress(b"1 Q0 d1 1 2.0 t\n1 Q0 d2 2 abc t\n"), 2, "score", "number"),
    # MS MARCO collection
    Rejected("collection: duplicate pid", collection, "collection.tsv", "1\tpassage\n1\tagain\n", 2, "pid", "duplicate"),
    Rejected("collection: missing text", collection, "collection.tsv", "1\tpassage\n2\n", 2, "passage", "missing"),
    # training files (flag, tevatron, triples)
    Rejected("training flag: mistyped pos", training, "train.jsonl",
             '{"query": "q", "pos": ["p"], "neg": []}\n{"query": "q", "pos": "p"}\n', 2, "pos", "list"),
    Rejected("training flag: empty query", training, "train.jsonl",
             '{"query": "q", "pos": ["p"]}\n{"query": "", "pos": ["p"]}\n', 2, "query", "empty"),
    Rejected("training flag: malformed JSON", training, "train.jsonl", '{"query": "q", "pos": ["p"]}\n{"query": \n', 2,
             None, "malformed JSON"),
    Rejected("training tevatron: missing passage text", training, "train.jsonl",
             '{"query_id": "1", "query": "q", "positive_passages": [{"docid": "a"}]}\n', 1,
             "positive_passages[0].text", "missing"),
    Rejected("training triples: missing negative", training, "train.tsv", "q\tp\tn\nq\tp\n", 2, "negative", "missing"),
    Rejected("training triples: non-UTF-8 bytes", training, "train.tsv", b"q\tp\tn\nq\tp\xff\tn\n", 2, None, "UTF-8"),
]


def _warns(expected: Any) -> Callable[[Any], bool]:
    return lambda got: got == expected


TOLERATED = [
    Tolerated("queries: BOM and CRLF", queries, "queries.jsonl",
              BOM + b'{"_id": "1", "text": "a"}\r\n{"_id": "2", "text": "b"}\r\n', _warns({"1": "a", "2": "b"})),
    Tolerated("run: BOM and CRLF", read_run, "run.trec", BOM + b"1 Q0 d1 1 2.0 t\r\n1 Q0 d2 2 1.0 t\r\n",
              _warns({"1": {"d1": 2.0, "d2": 1.0}})),
    Tolerated("run: gzipped, told by its first bytes whatever its name", read_run, "run.trec",
              gzip.compress(b"1 Q0 d1 1 2.0 t\n1 Q0 d2 2 1.0 t\n"), _warns({"1": {"d1": 2.0, "d2": 1.0}})),
    Tolerated("TREC qrels: gzipped", _qrels, "qrels.txt.gz", gzip.compress(b"1 0 d1 1\n1 0 d2 0\n"),
              _warns({"1": {"d1": 1, "d2": 0}})),
    Tolerated("TREC qrels: BOM and CRLF", _qrels, "qrels.txt", BOM + b"1 0 d1 1\r\n1 0 d2 0\r\n",
              _warns({"1": {"d1": 1, "d2": 0}})),
    Tolerated("topics: BOM and CRLF", load_topics, "topics.tsv", BOM + b"1\tquery one\r\n", _warns({"1": "query one"})),
    Tolerated("corpus: empty title and text (kept, counted)", lambda p: load_corpus(p), "corpus.jsonl",
              DOC + '\n{"_id": "d2", "title": "", "text": ""}\n', lambda got: set(got) == {"d1", "d2"},
              "1 document(s) with empty title and text"),
    Tolerated("eval: run query absent from the qrels (ignored, counted)", _evaluate, "run.trec",
              "1 Q0 d1 1 2.0 t\n2 Q0 d2 1 2.0 t\n3 Q0 d3 1 2.0 t\n", lambda got: got == {"RR@10": 1.0},
              "1 of 3 run queries are not judged"),
    Tolerated("eval: judged query absent from the run (scores 0, counted)", _evaluate, "run.trec",
              "1 Q0 d1 1 2.0 t\n", lambda got: got == {"RR@10": 0.5}, "1 of 2 judged queries have no hits"),
    Tolerated("training: judged docid absent from the corpus (skipped, counted)", _training_examples,
              "qrels/train.tsv", "query-id\tcorpus-id\tscore\n1\td1\t1\n2\td9\t1\n",
              lambda got: [ex.query_id for ex in got] == ["1"], "1 docid(s) of the qrels or negatives run are absent"),
]


@dataclass(frozen=True)
class BadConfig:
    """An experiment config refused before any work: the error names the file, the line and the dotted key."""

    name: str
    content: str
    key: str
    fragment: str
    line: int                        # the line of the offending key (or of the YAML syntax error)
    never_echoed: str | None = None  # a value that must not appear in the message (a secret)


BASE_CONFIG = "name: x\ndata:\n  beir: {beir}\nretriever:\n  method: iaa-l\n  budget: 0.5%\n  num_negatives: 0\n"

BAD_CONFIGS = [
    BadConfig("config: unknown key (with a suggestion)", BASE_CONFIG + "  max_step: 10\n", "retriever.max_step",
              "did you mean 'retriever.max_steps'", 8),
    BadConfig("config: wrong type", BASE_CONFIG + "  max_steps: ten\n", "retriever.max_steps", "expected", 8),
    BadConfig("config: unknown method", BASE_CONFIG.replace("iaa-l", "iaa-x"), "retriever.method", "unknown method", 5),
    BadConfig("config: malformed YAML", BASE_CONFIG + "  lr: [1e-3\n", "", "YAML", 9),
    BadConfig("config: a secret is refused, not echoed", BASE_CONFIG + "  api_key: sk-SECRET-123\n",
              "retriever.api_key", "unknown key", 8, never_echoed="sk-SECRET-123"),
    BadConfig("config: missing input", BASE_CONFIG.replace("{beir}", "no/such/folder"), "data.beir",
              "no/such/folder", 3),
]


def load_bad_config(case: BadConfig, folder: Path, beir: Path) -> Path:
    """Write the case's config into `folder` (pointing at a real BEIR folder) and load it; returns its path."""
    from peft_ir.experiment.loading import load_config

    path = folder / "config.yaml"
    path.write_text(case.content.replace("{beir}", str(beir)), encoding="utf-8")
    load_config(path, cwd=folder)
    return path
