"""Readers on real files (malformed input: tests/reliability/catalogue.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from peft_ir.data import (
    BeirDataset, TrainingExample, detect_shape, iter_corpus, load_qrels, load_topics, read_run, read_training, write_run,
    write_training,
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
    assert [ln.split()[2] for ln in lines] == ["d2", "d3", "d1"]  # trec_eval's order: ties by docid descending
    assert [ln.split()[3] for ln in lines] == ["1", "2", "3"]
    assert read_run(tmp_path / "r.trec") == run


def test_missing_beir_split(scifact: Path) -> None:
    with pytest.raises(InputError, match="split 'dev'"):
        BeirDataset(scifact, "dev")


def test_irds_ids_fail_clearly_without_the_package_or_network() -> None:
    from peft_ir.errors import PeftIRError

    with pytest.raises(PeftIRError, match="irds:msmarco-passage/dev/small") as info:
        load_topics("irds:msmarco-passage/dev/small")
    assert "ir_datasets" in str(info.value)
