"""Property-based tests: every writer round-trips through its reader; readers fail only with InputError."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peft_ir.data import (
    Document, TrainingExample, iter_collection, iter_corpus, load_qrels, read_queries, read_run, read_topics,
    read_training, write_beir_qrels, write_collection, write_corpus, write_queries, write_run, write_topics,
    write_training, write_trec_qrels,
)
from peft_ir.errors import InputError

ident = st.text(alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd"), max_codepoint=0x2FF), min_size=1, max_size=8)
text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=40).filter(
    lambda s: s.strip() != "")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _tmp() -> Path:
    return Path(tempfile.mkdtemp())


@SETTINGS
@given(st.dictionaries(ident, st.tuples(st.text(max_size=20), text), min_size=1, max_size=8))
def test_corpus_roundtrip(docs: dict[str, tuple[str, str]]) -> None:
    path = _tmp() / "corpus.jsonl"
    write_corpus([Document(i, t, x) for i, (t, x) in docs.items()], path)
    assert {d.id: (d.title, d.text) for d in iter_corpus(path)} == docs


@SETTINGS
@given(st.dictionaries(ident, text, min_size=1, max_size=8))
def test_queries_and_topics_roundtrip(queries: dict[str, str]) -> None:
    d = _tmp()
    write_queries(queries, d / "q.jsonl")
    assert read_queries(d / "q.jsonl") == queries
    write_topics(queries, d / "q.tsv")  # tsv collapses whitespace, as every TREC tool does
    assert read_topics(d / "q.tsv") == {k: " ".join(v.split()) for k, v in queries.items()}


@SETTINGS
@given(st.dictionaries(ident, st.dictionaries(ident, st.integers(-1, 3), min_size=1, max_size=5), min_size=1, max_size=5))
def test_qrels_roundtrip(qrels: dict[str, dict[str, int]]) -> None:
    d = _tmp()
    write_trec_qrels(qrels, d / "qrels.txt")
    write_beir_qrels(qrels, d / "qrels.tsv")
    assert load_qrels(d / "qrels.txt") == qrels
    assert load_qrels(d / "qrels.tsv") == qrels


@SETTINGS
@given(st.dictionaries(ident, st.dictionaries(ident, st.floats(-1e6, 1e6).map(lambda f: round(f, 4)), min_size=1,
                                              max_size=6), min_size=1, max_size=5))
def test_run_roundtrip(run: dict[str, dict[str, float]]) -> None:
    path = _tmp() / "run.trec"
    write_run(run, path)
    back = read_run(path)
    assert back.keys() == run.keys()
    for qid in run:
        assert back[qid].keys() == run[qid].keys()
        assert all(abs(back[qid][d] - run[qid][d]) < 1e-6 for d in run[qid])


@SETTINGS
@given(st.lists(st.tuples(text, st.lists(text, min_size=1, max_size=3), st.lists(text, min_size=1, max_size=3)),
                min_size=1, max_size=5), st.sampled_from(["flag", "tevatron"]))
def test_training_roundtrip(rows: list, shape: str) -> None:
    path = _tmp() / "train.jsonl"
    examples = [TrainingExample(q, p, n, str(i)) for i, (q, p, n) in enumerate(rows)]
    write_training(examples, path, shape)  # type: ignore[arg-type]
    assert [(e.query, e.positives, e.negatives) for e in read_training(path)] == [(q, p, n) for q, p, n in rows]


@SETTINGS
@given(st.dictionaries(ident, text, min_size=1, max_size=6))
def test_collection_roundtrip(passages: dict[str, str]) -> None:
    path = _tmp() / "collection.tsv"
    write_collection([Document(i, "", t) for i, t in passages.items()], path)
    assert {d.id: d.text for d in iter_collection(path)} == {k: " ".join(v.split()) for k, v in passages.items()}


READERS = [
    ("corpus.jsonl", lambda p: list(iter_corpus(p))),
    ("queries.jsonl", read_queries),
    ("topics.tsv", read_topics),
    ("qrels.txt", load_qrels),
    ("qrels.tsv", load_qrels),
    ("run.trec", read_run),
    ("train.jsonl", lambda p: list(read_training(p))),
    ("triples.tsv", lambda p: list(read_training(p))),
    ("collection.tsv", lambda p: list(iter_collection(p))),
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(READERS), st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_readers_fail_only_with_input_error(reader, content: bytes) -> None:  # type: ignore[no-untyped-def]
    name, fn = reader
    path = _tmp() / name
    path.write_bytes(content)
    try:
        fn(path)
    except InputError as exc:
        assert str(path) in str(exc)  # every error names the file
