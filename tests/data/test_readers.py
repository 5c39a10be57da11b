"""Readers on real files and on malformed input: every error names file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peft_ir.data import (
    BeirDataset, TrainingExample, detect_shape, iter_collection, iter_corpus, load_qrels, load_topics, read_queries,
    read_run, read_training, write_run, write_training,
)
from peft_ir.errors import InputError


def test_scifact_counts(scifact: Path) -> None:
    ds = BeirDataset(scifact, "test")
    assert len(ds.queries()) == 300
    assert sum(len(d) for d in ds.qrels().values()) == 339
    assert sum(1 for _ in iter_corpus(ds.corpus_path)) == 5183
    train = BeirDataset(scifact, "train")
    assert len(train.qrels()) == 809 and sum(len(d) for d in train.qrels().values()) == 919


def test_dl19_files(shared_data: Path) -> None:
    dl = shared_data / "trec-dl-2019"
    assert len(load_topics(dl / "queries.tsv")) == 43
    qrels = load_qrels(dl / "qrels.dl19-passage.txt")
    assert len(qrels) == 43 and sum(len(v) for v in qrels.values()) == 9260
    run = read_run(dl / "runs" / "bm25_top100.dl19.trec")
    assert len(run) == 43 and all(len(h) == 100 for h in run.values())
    ms = load_qrels(shared_data / "msmarco-passage-dev-small" / "qrels.dev.small.trec")
    assert len(ms) == 6980 and sum(len(v) for v in ms.values()) == 7437


def test_training_shapes(shared_data: Path) -> None:
    sample = shared_data / "msmarco-train-sample"
    assert detect_shape(sample / "train.jsonl") == "flag"
    flag = list(read_training(sample / "train.jsonl"))
    assert len(flag) == 10 and all(len(ex.positives) == 1 and len(ex.negatives) == 25 for ex in flag)
    triples = list(read_training(sample / "triples.tsv"))
    assert detect_shape(sample / "triples.tsv") == "triples" and len(triples) == 100


@pytest.mark.parametrize("shape", ["flag", "tevatron", "triples"])
def test_training_roundtrip(tmp_path: Path, shape: str) -> None:
    examples = [TrainingExample("what is x", ["x is a letter"], ["y is not"], "q1"),
                TrainingExample("why y", ["because"], ["no reason"], "q2")]
    path = tmp_path / f"train.{shape}"
    write_training(examples, path, shape)  # type: ignore[arg-type]
    back = list(read_training(path))
    assert [(e.query, e.positives, e.negatives) for e in back] == [(e.query, e.positives, e.negatives) for e in examples]


def test_run_ties_are_deterministic(tmp_path: Path) -> None:
    run = {"q1": {"d3": 1.0, "d1": 1.0, "d2": 2.0}}
    write_run(run, tmp_path / "r.trec")
    lines = (tmp_path / "r.trec").read_text().splitlines()
    assert [ln.split()[2] for ln in lines] == ["d2", "d1", "d3"]
    assert [ln.split()[3] for ln in lines] == ["1", "2", "3"]
    assert read_run(tmp_path / "r.trec") == run


def test_bom_and_crlf_are_tolerated(tmp_path: Path) -> None:
    p = tmp_path / "queries.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + b'{"_id": "1", "text": "a"}\r\n{"_id": "2", "text": "b"}\r\n')
    assert read_queries(p) == {"1": "a", "2": "b"}


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


GOOD_DOC = json.dumps({"_id": "d1", "title": "t", "text": "x"})

MALFORMED = [
    # (reader, file name, content, line, field or None, message fragment)
    (iter_corpus, "corpus.jsonl", GOOD_DOC + "\n{bad json\n", 2, None, "malformed JSON"),
    (iter_corpus, "corpus.jsonl", GOOD_DOC + '\n{"title": "t", "text": "x"}\n', 2, "_id", "missing"),
    (iter_corpus, "corpus.jsonl", GOOD_DOC + '\n{"_id": "d2", "text": 5}\n', 2, "text", "expected str"),
    (iter_corpus, "corpus.jsonl", GOOD_DOC + "\n" + GOOD_DOC + "\n", 2, "_id", "duplicate"),
    (iter_corpus, "corpus.jsonl", GOOD_DOC.encode() + b'\n{"_id": "d2", "text": "\xff"}\n', 2, None, "UTF-8"),
    (read_queries, "queries.jsonl", '{"_id": "1", "text": "a"}\n{"_id": "2", "text": "  "}\n', 2, "text", "empty"),
    (lambda p: load_qrels(p), "qrels.tsv", "query-id\tcorpus-id\tscore\n1\td1\t1\n2\td2\tx\n", 3, "score", "integer"),
    (lambda p: load_qrels(p), "qrels.txt", "1 0 d1 1\n1 0 d2\n", 2, "relevance", "missing"),
    (lambda p: load_qrels(p), "qrels.txt", "1 0 d1 1\n1 0 d1 2\n", 2, "docid", "duplicate"),
    (lambda p: load_qrels(p), "qrels.txt", "1 0 d1 1\n1 0 d2 1 extra\n", 2, None, "expected 4 fields"),
    (load_topics, "topics.tsv", "1\tquery one\n2\n", 2, "text", "missing"),
    (read_run, "run.trec", "1 Q0 d1 1 2.0 t\n1 Q0 d2 2 abc t\n", 2, "score", "number"),
    (read_run, "run.trec", "1 Q0 d1 1 2.0 t\n1 Q0 d1 2 1.0 t\n", 2, "docid", "duplicate"),
    (read_run, "run.trec", "1 Q0 d1 1 2.0 t\n1 Q0 d2 x 1.0 t\n", 2, "rank", "integer"),
    (iter_collection, "collection.tsv", "1\tpassage\n1\tagain\n", 2, "pid", "duplicate"),
    (lambda p: list(read_training(p)), "train.jsonl", '{"query": "q", "pos": ["p"], "neg": []}\n{"query": "q", "pos": "p"}\n',
     2, "pos", "list"),
    (lambda p: list(read_training(p)), "train.jsonl", '{"query": "q", "pos": ["p"]}\n{"query": "", "pos": ["p"]}\n',
     2, "query", "empty"),
    (lambda p: list(read_training(p)), "train.tsv", "q\tp\tn\nq\tp\n", 2, "negative", "missing"),
    (lambda p: list(read_training(p)), "train.jsonl",
     '{"query_id": "1", "query": "q", "positive_passages": [{"docid": "a"}]}\n', 1, "positive_passages[0].text", "missing"),
]


@pytest.mark.parametrize("reader,name,content,line,field,fragment", MALFORMED)
def test_malformed_input_names_file_line_field(tmp_path: Path, reader, name, content, line, field, fragment) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, name, content)
    with pytest.raises(InputError) as info:
        result = reader(path)
        if hasattr(result, "__next__"):
            list(result)
    err = info.value
    assert err.path == str(path) and err.line == line and err.field == field
    assert fragment in str(err) and f"{path}:{line}" in str(err)


def test_missing_beir_split(scifact: Path) -> None:
    with pytest.raises(InputError, match="split 'dev'"):
        BeirDataset(scifact, "dev")


def test_irds_ids_fail_clearly_without_the_package_or_network() -> None:
    from peft_ir.errors import PeftIRError

    with pytest.raises(PeftIRError, match="irds:msmarco-passage/dev/small") as info:
        load_topics("irds:msmarco-passage/dev/small")
    assert "ir_datasets" in str(info.value)
